package main

// One record: the lock, the saga from the stored state to its end, one PostgreSQL
// transaction and one awaited payment.state.changed event per transition.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"math/big"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	stateNew          = "NEW"
	stateFraudCheck   = "FRAUD_CHECK"
	stateApproved     = "APPROVED"
	stateRejected     = "REJECTED"
	stateManualReview = "MANUAL_REVIEW"
	stateProcessing   = "PROCESSING"
	stateCompleted    = "COMPLETED"
	stateFailed       = "FAILED"
	stateCompensated  = "COMPENSATED"
)

// endStates: where this baseline's saga ends (MANUAL_REVIEW waits for a human; RETRY and
// REFUNDED are never produced here but are not touched if found).
var endStates = map[string]bool{stateRejected: true, stateManualReview: true,
	stateCompleted: true, stateCompensated: true, "REFUNDED": true, "RETRY": true}

// releaseLock deletes the lock only if it is still ours.
const releaseLock = `
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
`

const selectState = `
SELECT current_state, previous_state, version, metadata::text AS metadata, updated_at,
       amount, currency, customer_id, merchant_id
FROM payment_states WHERE payment_id = $1
`

// transition: one statement (one transaction, one round trip) that advances the row —
// only forward, by version — and, only if it moved, adds the history row. Zero rows
// inserted means this version or a newer one is already stored.
const transition = `
WITH moved AS (
    INSERT INTO payment_states
        (payment_id, current_state, previous_state, amount, currency, customer_id,
         merchant_id, metadata, version, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $10)
    ON CONFLICT (payment_id) DO UPDATE SET
        current_state = EXCLUDED.current_state,
        previous_state = EXCLUDED.previous_state,
        metadata = EXCLUDED.metadata,
        version = EXCLUDED.version,
        updated_at = EXCLUDED.updated_at
    WHERE payment_states.version < EXCLUDED.version
    RETURNING 1
)
INSERT INTO payment_state_history
    (payment_id, state, previous_state, version, event_id, metadata, created_at)
SELECT $1, $2, $3, $9, $11, $8::jsonb, $10 FROM moved
ON CONFLICT (payment_id, version) DO NOTHING
`

const commandTimeout = 30 * time.Second // asyncpg's command_timeout in baseline.py

// errSuperseded: the stored row is already at this version or later.
var errSuperseded = errors.New("superseded")

// one handles a record until it is done; only then may its offset be committed.
func (b *baseline) one(pr *progress, record *kgo.Record) {
	defer func() {
		<-b.slots
		pr.running.Done()
		b.tasks.Done()
	}()
	finish := func(outcome string) {
		b.mu.Lock()
		b.counts[outcome]++
		pr.done(record.Offset)
		b.mu.Unlock()
		b.processed.Add(1)
	}
	p, invalid := validateCreated(record.Value)
	if invalid != "" {
		finish("invalid:" + invalid)
		return
	}
	delay := 200 * time.Millisecond
	for {
		outcome, err := b.payment(p)
		if err == nil {
			finish(outcome)
			return
		}
		if errors.Is(err, errSuperseded) {
			finish("superseded")
			return
		}
		if errors.Is(err, errInterrupted) || b.hard.Err() != nil || b.stopping.Err() != nil {
			return // left uncommitted: redelivered later
		}
		// a server down, or a bug: retry, never commit past it
		b.count("errors")
		msg := err.Error()
		if len(msg) > 200 {
			msg = msg[:200]
		}
		logf(30, "payment %s: %T: %s; retrying in %.1fs", p.id, err, msg, delay.Seconds())
		b.pause(delay)
		delay = min(delay*2, maxBackoff)
	}
}

func (b *baseline) payment(p payment) (string, error) {
	key := "lock:" + p.id
	token := newToken()
	if err := b.lock(key, token); err != nil {
		return "", err
	}
	defer func() { // released even when interrupted (bounded)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		if err := b.release.Run(ctx, b.redis, []string{key}, token).Err(); err != nil {
			logf(20, "release %s: %v", key, err)
		}
	}()
	return b.saga(p)
}

// newToken is uuid.uuid4().hex.
func newToken() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return hex.EncodeToString(u[:])
}

func (b *baseline) lock(key, token string) error {
	ttl := strconv.FormatInt(b.cfg.lockTTL().Milliseconds(), 10)
	delay := 2 * time.Millisecond
	for {
		err := b.redis.Do(b.hard, "SET", key, token, "NX", "PX", ttl).Err()
		if err == nil {
			return nil
		}
		if !errors.Is(err, redis.Nil) {
			return err
		}
		if b.stopping.Err() != nil {
			return errInterrupted
		}
		if delay == 2*time.Millisecond {
			b.count("lock_waits")
		}
		time.Sleep(delay)
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// saga drives the payment from its stored state (read under the lock) to its end.
func (b *baseline) saga(p payment) (string, error) {
	var (
		state, currency, customer, merchant string
		previous, metadataText              *string
		version                             int32
		updatedAt                           time.Time
		amount                              pgtype.Numeric
		metadata                            meta
	)
	ctx, cancel := context.WithTimeout(b.hard, commandTimeout)
	err := b.pool.QueryRow(ctx, selectState, p.id).Scan(&state, &previous, &version,
		&metadataText, &updatedAt, &amount, &currency, &customer, &merchant)
	cancel()
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if state, version, metadata, err = b.step(p, nil, 0, stateNew, meta{}); err != nil {
			return "", err
		}
	case err != nil:
		return "", err
	default:
		if conflicts(p, amount, currency, customer, merchant) {
			return "conflict", nil
		}
		if metadataText != nil {
			if metadata, err = parseMeta(*metadataText); err != nil {
				return "", err
			}
		}
		// The previous run may have died between the commit and the send: send again.
		if err := b.emit(p, previous, state, formatTimestamp(updatedAt), metadata, version); err != nil {
			return "", err
		}
		if endStates[state] {
			return "already_done", nil
		}
		b.count("resumed")
	}
	for !endStates[state] {
		var target string
		var extra meta
		switch state {
		case stateNew:
			target, extra = stateFraudCheck, meta{}
		case stateFraudCheck:
			if target, extra, err = b.fraudCheck(p); err != nil {
				return "", err
			}
		case stateApproved:
			target, extra = stateProcessing, meta{{"attempt", 1}}
		case stateProcessing:
			if target, extra, err = b.process(p); err != nil {
				return "", err
			}
		case stateFailed:
			target, extra = stateCompensated, compensation(metadata)
		default:
			return "", errors.New("unexpected state " + state)
		}
		prev := state
		if state, version, metadata, err = b.step(p, &prev, version, target, extra); err != nil {
			return "", err
		}
	}
	return state, nil
}

// conflicts: the stored payment is not the one this event describes.
func conflicts(p payment, amount pgtype.Numeric, currency, customer, merchant string) bool {
	stored := decimal{digits: "0"}
	if amount.Valid && amount.Int != nil {
		stored = decimal{negative: amount.Int.Sign() < 0,
			digits: new(big.Int).Abs(amount.Int).String(), exp: int64(amount.Exp)}
	}
	event, _ := parseDecimal(p.amount)
	return !sameAmount(stored, event) || currency != p.currency || customer != p.customer ||
		merchant != p.merchant
}

// now is this instant to the millisecond: the same value in the database and the event.
func now() (time.Time, string) {
	moment := time.Now().UTC().Truncate(time.Millisecond)
	return moment, formatTimestamp(moment)
}

// formatTimestamp is saga.format_timestamp: ISO 8601 in UTC, milliseconds, a Z.
func formatTimestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// step is one transition: one database transaction, then its event (awaited).
func (b *baseline) step(p payment, previous *string, version int32, target string,
	metadata meta) (string, int32, meta, error) {
	moment, stamp := now()
	if target == stateFraudCheck {
		metadata = append(append(meta{}, metadata...), kv{"fraud_requested_at", stamp})
	}
	if target == stateCompleted {
		metadata = append(meta{{"completion_timestamp", stamp}}, metadata...)
	}
	version++
	var prev any
	if previous != nil {
		prev = *previous
	}
	ctx, cancel := context.WithTimeout(b.hard, commandTimeout)
	tag, err := b.pool.Exec(ctx, transition, p.id, target, prev, p.amount, p.currency,
		p.customer, p.merchant, string(encode(metadata)), version, moment,
		p.id+":"+strconv.Itoa(int(version)))
	cancel()
	if err != nil {
		return "", 0, nil, err
	}
	if tag.RowsAffected() == 0 {
		return "", 0, nil, errSuperseded
	}
	if err := b.emit(p, previous, target, stamp, metadata, version); err != nil {
		return "", 0, nil, err
	}
	return target, version, metadata, nil
}

// emit sends a payment.state.changed event, field for field the orchestrator's, and
// waits for the broker's acknowledgement.
func (b *baseline) emit(p payment, previous *string, state, changedAt string, metadata meta,
	version int32) error {
	if metadata == nil {
		metadata = meta{}
	}
	var buf bytes.Buffer
	buf.Grow(512)
	writeValue(&buf, meta{{"payment_id", p.id}, {"previous_state", previous},
		{"current_state", state}, {"amount", num(p.amount)}, {"currency", p.currency},
		{"customer_id", p.customer}, {"merchant_id", p.merchant}, {"changed_at", changedAt},
		{"metadata", metadata}, {"version", int(version)},
		{"event_id", p.id + ":" + strconv.Itoa(int(version))}})
	return b.producer.ProduceSync(b.hard, &kgo.Record{Topic: b.cfg.topicOut(),
		Key: []byte(p.id), Value: buf.Bytes()}).FirstErr()
}

// request returns the reply's bytes, or why there is none: "timeout" or "unavailable".
func (b *baseline) request(subject string, body []byte, timeout time.Duration) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(b.hard, timeout)
	defer cancel()
	msg, err := b.nc.RequestWithContext(ctx, subject, body)
	switch {
	case err == nil:
		if msg.Data == nil {
			return []byte{}, "", nil // an empty reply is a reply (unreadable), not none
		}
		return msg.Data, "", nil
	case b.hard.Err() != nil:
		return nil, "", errInterrupted
	case errors.Is(err, nats.ErrNoResponders):
		return nil, "unavailable", nil
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return nil, "timeout", nil
	default:
		return nil, "unavailable", nil
	}
}

func (b *baseline) fraudCheck(p payment) (string, meta, error) {
	reply, why, err := b.request("fraud.check", fraudBody(p), b.cfg.fraudTimeout)
	if err != nil {
		return "", nil, err
	}
	reason := "fraud service unavailable"
	if why == "timeout" {
		reason = "fraud check timed out"
	}
	target, extra := fraudOutcome(p.id, reply, reason)
	return target, extra, nil
}

func (b *baseline) process(p payment) (string, meta, error) {
	reply, why, err := b.request("payment.process", processBody(p), b.cfg.processorTimeout)
	if err != nil {
		return "", nil, err
	}
	code, message := "connection_error", "no processor available"
	if why == "timeout" {
		code, message = "timeout", "processor did not answer in time"
	}
	target, extra := processOutcome(p.id, reply, code, message)
	return target, extra, nil
}
