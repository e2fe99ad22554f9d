package main

// The contracts, ported from orchestrator_app.domain: exact decimals (validation.py,
// money.py), the JSON the orchestrator writes (codec.py: simplejson, compact, ASCII
// only), and the reading of NATS replies (replies.py).

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// --- exact decimals -----------------------------------------------------------------

// decimal is a JSON number as Python's Decimal holds it: sign, coefficient digits (no
// leading zeros, "0" for zero) and exponent. Never a float.
type decimal struct {
	negative bool
	digits   string
	exp      int64
}

var numberText = regexp.MustCompile(`^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$`)

// parseDecimal reads JSON number text exactly; false for an exponent out of range.
func parseDecimal(text string) (decimal, bool) {
	m := numberText.FindStringSubmatch(text)
	if m == nil {
		return decimal{}, false
	}
	var exp int64
	if m[4] != "" {
		e, err := strconv.ParseInt(m[4], 10, 64)
		if err != nil || e > 999_999_999_999_999_999 || e < -999_999_999_999_999_999 {
			return decimal{}, false // beyond what Decimal holds: codec.NumberError
		}
		exp = e
	}
	exp -= int64(len(m[3]))
	digits := strings.TrimLeft(m[2]+m[3], "0")
	if digits == "" {
		digits = "0"
	}
	return decimal{negative: m[1] == "-", digits: digits, exp: exp}, true
}

func isIntegerText(text string) bool { return !strings.ContainsAny(text, ".eE") }

func (d decimal) zero() bool { return d.digits == "0" }

// adjusted is Decimal.adjusted(): the exponent of the leading digit.
func (d decimal) adjusted() int64 { return d.exp + int64(len(d.digits)) - 1 }

// String is Python's str(Decimal) (to-scientific-string), which simplejson writes.
func (d decimal) String() string {
	sign := ""
	if d.negative {
		sign = "-"
	}
	n := int64(len(d.digits))
	left := d.exp + n
	var dot int64 = 1
	if d.exp <= 0 && left > -6 {
		dot = left
	}
	var intPart, fracPart string
	switch {
	case dot <= 0:
		intPart, fracPart = "0", "."+strings.Repeat("0", int(-dot))+d.digits
	case dot >= n:
		intPart = d.digits + strings.Repeat("0", int(dot-n))
	default:
		intPart, fracPart = d.digits[:dot], "."+d.digits[dot:]
	}
	exp := ""
	if left != dot {
		exp = "E" + strconv.FormatInt(left-dot, 10)
		if left-dot >= 0 {
			exp = "E+" + strconv.FormatInt(left-dot, 10)
		}
	}
	return sign + intPart + fracPart + exp
}

// pyNumber is the text Python writes back for a decoded JSON number: an int as an int,
// anything with a fraction or exponent as its Decimal.
func pyNumber(text string) (string, bool) {
	d, ok := parseDecimal(text)
	if !ok {
		return "", false
	}
	if isIntegerText(text) {
		if d.zero() {
			return "0", true
		}
		if d.negative {
			return "-" + d.digits, true
		}
		return d.digits, true
	}
	return d.String(), true
}

// money.MINOR_UNITS: currencies whose minor unit is not 2.
var minorUnits = map[string]int{
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
	"RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
	"CLF": 4, "UYW": 4,
}

// The ISO 4217 codes pycountry lists (what money.is_currency accepts), less XXX and XTS.
var currencies = func() map[string]bool {
	set := map[string]bool{}
	for _, c := range strings.Fields(`AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD
		BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU
		CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ
		GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD
		KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV
		MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
		SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY
		TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAD XAF XAG XAU XBA
		XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG`) {
		set[c] = true
	}
	return set
}()

func minorUnit(currency string) int {
	if places, ok := minorUnits[currency]; ok {
		return places
	}
	return 2
}

// canonicalAmount is money.canonical_amount: the amount with exactly the currency's minor
// unit of decimal places (USD 100.5 -> "100.50"), or false when it is not payable
// (zero, negative, more than 15 integer digits, a significant digit below the minor unit).
func canonicalAmount(d decimal, currency string) (string, bool) {
	if d.zero() || d.negative || d.adjusted() >= 15 {
		return "", false
	}
	places := int64(minorUnit(currency))
	digits := d.digits
	if beyond := -d.exp - places; beyond > 0 {
		if beyond > int64(len(digits)) || strings.Trim(digits[int64(len(digits))-beyond:], "0") != "" {
			return "", false
		}
		digits = digits[:int64(len(digits))-beyond]
	} else {
		digits += strings.Repeat("0", int(-beyond))
	}
	if places == 0 {
		return digits, true
	}
	if pad := places + 1 - int64(len(digits)); pad > 0 {
		digits = strings.Repeat("0", int(pad)) + digits
	}
	cut := int64(len(digits)) - places
	return digits[:cut] + "." + digits[cut:], true
}

// sameAmount: the stored DECIMAL(19,4) and the event's amount are the same number
// (Python compares the two Decimals: 100.5000 == 100.50).
func sameAmount(stored, event decimal) bool {
	norm := func(d decimal) decimal {
		if d.zero() {
			return decimal{digits: "0"}
		}
		trimmed := strings.TrimRight(d.digits, "0")
		return decimal{d.negative, trimmed, d.exp + int64(len(d.digits)-len(trimmed))}
	}
	return norm(stored) == norm(event)
}

// --- JSON ---------------------------------------------------------------------------

// decodeJSON is codec.loads' acceptance: UTF-8, one JSON value and nothing after it,
// numbers kept as their text.
func decodeJSON(raw []byte) (any, bool) {
	if !utf8.Valid(raw) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false
	}
	if !numbersReadable(v) {
		return nil, false
	}
	return v, true
}

// numbersReadable: every number is one Python's codec decodes (no exponent beyond Decimal).
func numbersReadable(v any) bool {
	switch x := v.(type) {
	case json.Number:
		_, ok := parseDecimal(string(x))
		return ok
	case []any:
		for _, e := range x {
			if !numbersReadable(e) {
				return false
			}
		}
	case map[string]any:
		for _, e := range x {
			if !numbersReadable(e) {
				return false
			}
		}
	}
	return true
}

// num is a JSON number written as-is (already in Python's form).
type num string

// rawJSON is a JSON value read from PostgreSQL (jsonb text), re-written compact, ASCII.
type rawJSON []byte

type kv struct {
	k string
	v any
}

// meta is a JSON object in insertion order, as a Python dict keeps it.
type meta []kv

func (m meta) get(key string) (any, bool) {
	for _, e := range m {
		if e.k == key {
			return e.v, true
		}
	}
	return nil, false
}

// parseMeta reads a stored metadata object keeping its key order.
func parseMeta(text string) (meta, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("metadata is not a JSON object")
	}
	var out meta
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		out = append(out, kv{t.(string), rawJSON(raw)})
	}
	return out, nil
}

// value of a stored metadata entry (strings, numbers, booleans as Python would see them).
func metaValue(v any) any {
	if raw, ok := v.(rawJSON); ok {
		decoded, ok := decodeJSON(raw)
		if !ok {
			return nil
		}
		return decoded
	}
	return v
}

const hexDigits = "0123456789abcdef"

// writeString writes a JSON string as simplejson does by default (ensure_ascii): every
// character outside space..~ escaped, \b \f \n \r \t by name, others as \uXXXX.
func writeString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r >= 0x20 && r <= 0x7e:
			b.WriteByte(byte(r))
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r > 0xffff:
			r -= 0x10000
			writeU(b, 0xd800+(r>>10))
			writeU(b, 0xdc00+(r&0x3ff))
		default:
			writeU(b, r)
		}
	}
	b.WriteByte('"')
}

func writeU(b *bytes.Buffer, r rune) {
	b.WriteString(`\u`)
	b.WriteByte(hexDigits[r>>12&0xf])
	b.WriteByte(hexDigits[r>>8&0xf])
	b.WriteByte(hexDigits[r>>4&0xf])
	b.WriteByte(hexDigits[r&0xf])
}

// writeRaw re-writes stored JSON compact and ASCII-only (as Python's loads + dumps would).
func writeRaw(b *bytes.Buffer, raw []byte) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		b.WriteString("null")
		return
	}
	data := compact.Bytes()
	for i := 0; i < len(data); {
		c := data[i]
		if c < utf8.RuneSelf && c != 0x7f {
			b.WriteByte(c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(data[i:])
		i += size
		if r > 0xffff {
			r -= 0x10000
			writeU(b, 0xd800+(r>>10))
			writeU(b, 0xdc00+(r&0x3ff))
		} else {
			writeU(b, r)
		}
	}
}

func writeValue(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case string:
		writeString(b, x)
	case *string:
		if x == nil {
			b.WriteString("null")
		} else {
			writeString(b, *x)
		}
	case int:
		b.WriteString(strconv.Itoa(x))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case num:
		b.WriteString(string(x))
	case rawJSON:
		writeRaw(b, x)
	case meta:
		b.WriteByte('{')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, e.k)
			b.WriteByte(':')
			writeValue(b, e.v)
		}
		b.WriteByte('}')
	default: // decoded reply values (maps, lists): only ever nested in text fields
		data, _ := json.Marshal(x)
		writeRaw(b, data)
	}
}

func encode(m meta) []byte {
	var b bytes.Buffer
	writeValue(&b, m)
	return b.Bytes()
}

// --- payment.created (validation.validate_created) ----------------------------------

type payment struct {
	id, amount, currency, customer, merchant string
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@\-]*$`)

// validateCreated returns the payment, or the code of validation.Invalid.
func validateCreated(raw []byte) (payment, string) {
	if len(raw) > 65536 {
		return payment{}, "too_large"
	}
	decoded, ok := decodeJSON(raw)
	if !ok {
		return payment{}, "malformed_json"
	}
	data, ok := decoded.(map[string]any)
	if !ok {
		return payment{}, "not_an_object"
	}
	for _, name := range []string{"payment_id", "amount", "currency", "customer_id",
		"merchant_id", "status", "created_at"} {
		if data[name] == nil {
			return payment{}, "missing_field"
		}
	}
	ids := [3]string{}
	for i, name := range []string{"payment_id", "customer_id", "merchant_id"} {
		s, ok := data[name].(string)
		if !ok {
			return payment{}, "invalid_type"
		}
		if s == "" || utf8.RuneCountInString(s) > 255 || !idPattern.MatchString(s) {
			return payment{}, "invalid_id"
		}
		ids[i] = s
	}
	currency, ok := data["currency"].(string)
	if !ok {
		return payment{}, "invalid_type"
	}
	if !currencies[currency] {
		return payment{}, "invalid_currency"
	}
	number, ok := data["amount"].(json.Number)
	if !ok {
		return payment{}, "invalid_type"
	}
	d, ok := parseDecimal(string(number))
	if !ok {
		return payment{}, "malformed_json"
	}
	amount, ok := canonicalAmount(d, currency)
	if !ok {
		return payment{}, "invalid_amount"
	}
	if status, ok := data["status"].(string); !ok || status != "NEW" {
		return payment{}, "invalid_status"
	}
	createdAt, ok := data["created_at"].(string)
	if !ok {
		return payment{}, "invalid_type"
	}
	if code := checkTimestamp(createdAt); code != "" {
		return payment{}, code
	}
	return payment{id: ids[0], amount: amount, currency: currency, customer: ids[1],
		merchant: ids[2]}, ""
}

// An ISO 8601 date and time with a zone, in the forms Python's datetime.fromisoformat
// reads (extended or basic date and time, '.' or ',' before the fraction, Z or ±hh[:mm]).
var isoTimestamp = regexp.MustCompile(`^(\d{4})-?(\d{2})-?(\d{2}).` +
	`(\d{2})(?::?(\d{2})(?::?(\d{2})(?:[.,](\d+))?)?)?` +
	`(Z|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?)?$`)

func checkTimestamp(s string) string {
	m := isoTimestamp.FindStringSubmatch(s)
	if m == nil {
		return "invalid_timestamp"
	}
	atoi := func(t string) int { n, _ := strconv.Atoi(t); return n }
	year, month, day := atoi(m[1]), atoi(m[2]), atoi(m[3])
	if year < 1 || month < 1 || month > 12 || day < 1 ||
		day > time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day() ||
		atoi(m[4]) > 23 || atoi(m[5]) > 59 || atoi(m[6]) > 59 {
		return "invalid_timestamp"
	}
	if zone := m[8]; zone == "" {
		return "invalid_timestamp" // "must include a time zone"
	} else if zone != "Z" && (atoi(zone[1:3]) > 23 || len(zone) >= 5 && atoi(strings.TrimPrefix(zone[3:], ":")[:2]) > 59) {
		return "invalid_timestamp"
	}
	return ""
}

// --- NATS replies (replies.py) ------------------------------------------------------

// fraudBody is replies.fraud_wire_body.
func fraudBody(p payment) []byte {
	return encode(meta{{"payment_id", p.id}, {"customer_id", p.customer},
		{"amount", num(p.amount)}, {"currency", p.currency}, {"merchant_id", p.merchant}})
}

// processBody is replies.process_wire_body (a payment, attempt 1).
func processBody(p payment) []byte {
	return encode(meta{{"payment_id", p.id}, {"amount", num(p.amount)},
		{"currency", p.currency}, {"customer_id", p.customer}, {"merchant_id", p.merchant},
		{"attempt", 1}})
}

// fraudOutcome is fraud_outcome(fraud_result / fraud_unavailable): the state after
// FRAUD_CHECK and its metadata. reply is nil when there is none (why: unavailable).
func fraudOutcome(paymentID string, reply []byte, unavailable string) (string, meta) {
	review := func(reason string) (string, meta) {
		return stateManualReview, meta{{"review_reason", reason}}
	}
	if reply == nil {
		return review(unavailable)
	}
	decoded, ok := decodeJSON(reply)
	if !ok {
		return review("fraud service sent an unreadable reply")
	}
	data, ok := decoded.(map[string]any)
	if !ok || !sameString(data["payment_id"], paymentID) {
		return review("fraud reply is for another payment")
	}
	approved, okApproved := data["approved"].(bool)
	score, okScore := data["risk_score"].(json.Number)
	var reason any = ""
	if r, present := data["reason"]; present {
		reason = r
	}
	reasonText, okReason := reason.(string)
	if !okApproved || !okScore || !okReason {
		return review("fraud reply has missing or mistyped fields")
	}
	d, ok := parseDecimal(string(score))
	if !ok || d.adjusted() < -20 || d.adjusted() > 20 {
		return review("fraud reply has an unreadable risk_score")
	}
	scoreText, _ := pyNumber(string(score))
	reasonText = text(reasonText, 500)
	if approved {
		return stateApproved, meta{{"fraud_score", num(scoreText)}, {"fraud_reason", reasonText}}
	}
	return stateRejected, meta{{"fraud_score", num(scoreText)}, {"rejection_reason", reasonText}}
}

var retryableErrors = map[string]bool{"timeout": true, "connection_error": true}

// processOutcome is process_outcome(process_result / process_failure): the state after
// PROCESSING and its metadata. reply is nil when there is none (code and message say why).
func processOutcome(paymentID string, reply []byte, code, message string) (string, meta) {
	failed := func(code, message string, retryable bool) (string, meta) {
		code, message = sanitize(code), sanitize(message)
		if code == "" {
			code = "processor_error"
		}
		return stateFailed, meta{{"error_code", code}, {"error_message", truncate(message, 500)},
			{"retry_count", 0}, {"retryable", retryable || retryableErrors[code]}}
	}
	if reply == nil {
		return failed(code, message, true)
	}
	decoded, ok := decodeJSON(reply)
	data, isObject := decoded.(map[string]any)
	if !ok || !isObject || !sameString(data["payment_id"], paymentID) {
		return failed("invalid_reply", "processor sent an unreadable reply", true)
	}
	success, ok := data["success"].(bool)
	if !ok {
		return failed("invalid_reply", "processor reply has no boolean 'success'", true)
	}
	if success {
		return stateCompleted, meta{{"confirmation_id", text(or(data["confirmation_id"], ""), 255)},
			{"confirmed_attempt", 1}}
	}
	retryable, _ := data["retryable"].(bool)
	return failed(text(or(data["error_code"], "processor_error"), 100),
		text(or(data["error_message"], ""), 500), retryable)
}

// compensation is FAILED -> COMPENSATED metadata, from the FAILED state's metadata.
func compensation(failed meta) meta {
	reason := "permanent error"
	retryable, _ := failed.get("retryable")
	if truthy(metaValue(retryable)) {
		reason = "retryable error, not retried (the baseline has no retries)"
	}
	code, _ := failed.get("error_code")
	message, ok := failed.get("error_message")
	if !ok {
		message = ""
	}
	return meta{{"compensation_reason", reason}, {"error_code", code},
		{"error_message", message}, {"retry_count", 0}}
}

func sameString(v any, s string) bool {
	t, ok := v.(string)
	return ok && t == s
}

// truthy is Python's bool() of a decoded JSON value.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case json.Number:
		d, ok := parseDecimal(string(x))
		return !ok || !d.zero()
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

// or is Python's `value or fallback`.
func or(v any, fallback string) any {
	if truthy(v) {
		return v
	}
	return fallback
}

// text is replies._text: str(value), at most limit characters, sanitised.
func text(v any, limit int) string {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case json.Number:
		s, _ = pyNumber(string(x))
	case bool:
		s = map[bool]string{true: "True", false: "False"}[x]
	case nil:
		s = "None"
	default: // a list or object: compact JSON (Python would print its repr)
		data, _ := json.Marshal(x)
		s = string(data)
	}
	return sanitize(truncate(s, limit))
}

func truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	n := 0
	for i := range s {
		if n == limit {
			return s[:i]
		}
		n++
	}
	return s
}

// sanitize is replies.sanitize_text: C0 controls but tab, newline and CR become U+FFFD
// (a lone surrogate is already U+FFFD once decoded here).
func sanitize(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' {
			return 0xfffd
		}
		return r
	}, s)
}
