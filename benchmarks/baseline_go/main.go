// Command baseline_go is benchmarks/baseline.py in Go: the spec's own design — a Redis
// lock per event, one PostgreSQL transaction per transition — with the same contracts,
// settings, output and guarantees (read baseline.py's docstring: it is the spec of this
// program too). What differs is only how: goroutines instead of asyncio tasks, a pgx pool
// (prepared statements, no reset on release), franz-go for Kafka, go-redis, nats.go.
//
// Settings (environment): KAFKA_BROKERS, DATABASE_URL, REDIS_URL, NATS_URL (required),
// TOPIC_PREFIX (""), BASELINE_CONCURRENCY (64), BASELINE_GROUP (default
// <TOPIC_PREFIX>payment-baseline), FRAUD_CHECK_TIMEOUT_SECONDS (5),
// PROCESSOR_TIMEOUT_SECONDS (10), LOG_LEVEL (WARNING, on stderr). A missing or bad
// setting exits 2 with one line naming it.
//
// Output on stdout: "baseline ready" once subscribed and assigned partitions, then
// "baseline processed N" every 5 s. SIGTERM / SIGINT: stop fetching, finish the payments
// in flight (those not done within 2.5 s are interrupted and left for redelivery),
// commit, exit 0 within 5 s.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	partitionsPerTopic = 4
	reportEvery        = 5 * time.Second
	commitEvery        = 500 * time.Millisecond
	shutdownGrace      = 2500 * time.Millisecond
	maxBackoff         = 5 * time.Second
)

// --- settings -----------------------------------------------------------------------

type config struct {
	brokers          []string
	databaseURL      string
	redisURL         string
	natsURL          string
	prefix           string
	concurrency      int
	group            string
	fraudTimeout     time.Duration
	processorTimeout time.Duration
}

func (c config) topicIn() string  { return c.prefix + "payment.created" }
func (c config) topicOut() string { return c.prefix + "payment.state.changed" }

// lockTTL: longer than the lock can legitimately be held (both NATS calls time out, plus
// the database and Kafka work around them).
func (c config) lockTTL() time.Duration { return c.fraudTimeout + c.processorTimeout + 5*time.Second }

// poolSize: a transaction holds a connection for about a millisecond; more connections
// only add PostgreSQL processes competing for the same cores.
func (c config) poolSize() int { return max(2, min(c.concurrency, 16)) }

type configError string

func (e configError) Error() string { return string(e) }

func configFromEnv() (config, error) {
	required := func(name string) (string, error) {
		value := strings.TrimSpace(os.Getenv(name))
		if value == "" {
			return "", configError(name + " is not set")
		}
		return value, nil
	}
	positive := func(name, fallback string, integer bool) (float64, error) {
		raw := fallback
		if v, ok := os.LookupEnv(name); ok {
			raw = v
		}
		raw = strings.TrimSpace(raw)
		bad := configError(fmt.Sprintf("%s must be a positive number, got '%s'", name, raw))
		var value float64
		if integer {
			n, err := strconv.Atoi(raw)
			if err != nil {
				return 0, bad
			}
			value = float64(n)
		} else {
			f, err := strconv.ParseFloat(raw, 64)
			if err != nil {
				return 0, bad
			}
			value = f
		}
		if !(value > 0) || value > 1e15 {
			return 0, bad
		}
		return value, nil
	}
	var c config
	var err error
	brokers, err := required("KAFKA_BROKERS")
	if err != nil {
		return c, err
	}
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.brokers = append(c.brokers, strings.TrimPrefix(b, "kafka://"))
		}
	}
	if c.databaseURL, err = required("DATABASE_URL"); err != nil {
		return c, err
	}
	if c.redisURL, err = required("REDIS_URL"); err != nil {
		return c, err
	}
	if c.natsURL, err = required("NATS_URL"); err != nil {
		return c, err
	}
	c.prefix = os.Getenv("TOPIC_PREFIX")
	concurrency, err := positive("BASELINE_CONCURRENCY", "64", true)
	if err != nil {
		return c, err
	}
	c.concurrency = int(concurrency)
	if c.group = strings.TrimSpace(os.Getenv("BASELINE_GROUP")); c.group == "" {
		c.group = c.prefix + "payment-baseline"
	}
	fraud, err := positive("FRAUD_CHECK_TIMEOUT_SECONDS", "5", false)
	if err != nil {
		return c, err
	}
	processor, err := positive("PROCESSOR_TIMEOUT_SECONDS", "10", false)
	if err != nil {
		return c, err
	}
	c.fraudTimeout = time.Duration(fraud * float64(time.Second))
	c.processorTimeout = time.Duration(processor * float64(time.Second))
	return c, nil
}

// --- logging (Python's logging format, on stderr) -----------------------------------

var logLevel = 30

func logf(level int, format string, args ...any) {
	if level < logLevel {
		return
	}
	name := map[int]string{10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR"}[level]
	fmt.Fprintf(os.Stderr, "%s %s baseline: %s\n",
		time.Now().Format("2006-01-02 15:04:05,000"), name, fmt.Sprintf(format, args...))
}

func setLogLevel() {
	levels := map[string]int{"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30,
		"ERROR": 40, "CRITICAL": 50, "FATAL": 50}
	if level, ok := levels[strings.ToUpper(os.Getenv("LOG_LEVEL"))]; ok {
		logLevel = level
	}
}

// --- the service --------------------------------------------------------------------

type baseline struct {
	cfg config
	// stopping: stop fetching and stop waiting (SIGTERM). hard: interrupt what still runs.
	stopping   context.Context
	stop       context.CancelFunc
	hard       context.Context
	hardCancel context.CancelFunc

	pool     *pgxpool.Pool
	redis    *redis.Client
	release  *redis.Script
	nc       *nats.Conn
	producer *kgo.Client
	consumer *kgo.Client

	mu         sync.Mutex // partitions and their progress, counts
	partitions map[topicPartition]*progress
	counts     map[string]int
	processed  atomic.Int64
	ready      atomic.Bool

	slots chan struct{} // BASELINE_CONCURRENCY payments in flight at most
	tasks sync.WaitGroup
}

func newBaseline(cfg config) *baseline {
	b := &baseline{cfg: cfg, partitions: map[topicPartition]*progress{},
		counts: map[string]int{}, slots: make(chan struct{}, cfg.concurrency)}
	b.stopping, b.stop = context.WithCancel(context.Background())
	b.hard, b.hardCancel = context.WithCancel(context.Background())
	return b
}

func (b *baseline) count(name string) {
	b.mu.Lock()
	b.counts[name]++
	b.mu.Unlock()
}

func (b *baseline) start() error {
	cfg := b.cfg
	if err := ensureTopics(b.stopping, cfg, 60*time.Second); err != nil {
		return err
	}
	if err := migrate(b.stopping, cfg.databaseURL); err != nil {
		return err
	}
	poolCfg, err := pgxpool.ParseConfig(cfg.databaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	poolCfg.MinConns, poolCfg.MaxConns = 2, int32(cfg.poolSize())
	if b.pool, err = pgxpool.NewWithConfig(b.stopping, poolCfg); err != nil {
		return err
	}
	redisOpts, err := redis.ParseURL(cfg.redisURL)
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	// A blocking pool: a payment waits (up to 10 s) for a free connection.
	redisOpts.PoolSize, redisOpts.PoolTimeout = cfg.poolSize()*2, 10*time.Second
	redisOpts.ReadTimeout, redisOpts.WriteTimeout = 10*time.Second, 10*time.Second
	redisOpts.DialTimeout = 5 * time.Second
	b.redis = redis.NewClient(redisOpts)
	if err := b.redis.Ping(b.stopping).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	b.release = redis.NewScript(releaseLock)
	if b.nc, err = nats.Connect(cfg.natsURL, nats.Name("baseline"), nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second)); err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	if b.producer, err = kgo.NewClient(kgo.SeedBrokers(cfg.brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(time.Millisecond),
		kgo.ProducerBatchMaxBytes(256*1024),
		kgo.ProducerBatchCompression(kgo.NoCompression())); err != nil { // as aiokafka
		return err
	}
	b.consumer, err = kgo.NewClient(kgo.SeedBrokers(cfg.brokers...),
		kgo.ConsumerGroup(cfg.group), kgo.ClientID(cfg.group), kgo.ConsumeTopics(cfg.topicIn()),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.Balancers(kgo.RoundRobinBalancer()), // eager, like aiokafka's default
		kgo.SessionTimeout(10*time.Second), kgo.HeartbeatInterval(time.Second),
		kgo.RebalanceTimeout(30*time.Second), kgo.FetchMaxWait(500*time.Millisecond),
		kgo.OnPartitionsAssigned(b.assigned), kgo.OnPartitionsRevoked(b.revoked),
		kgo.OnPartitionsLost(b.revoked))
	return err
}

// close finishes (or interrupts) what is in flight, commits, closes every client: < 5 s.
func (b *baseline) close() {
	if !waitTimeout(&b.tasks, shutdownGrace) {
		logf(30, "interrupting the payments in flight (left for redelivery)")
		b.hardCancel()
		waitTimeout(&b.tasks, 500*time.Millisecond)
	}
	b.hardCancel()
	if b.consumer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		b.commit(ctx, nil)
		cancel()
		done := make(chan struct{})
		go func() { b.consumer.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second):
			logf(20, "closing: consumer")
		}
	}
	if b.producer != nil {
		b.producer.Close()
	}
	if b.nc != nil {
		b.nc.Close()
	}
	if b.redis != nil {
		b.redis.Close()
	}
	if b.pool != nil {
		b.pool.Close()
	}
}

func waitTimeout(wg *sync.WaitGroup, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// ensureTopics creates the two topics when missing, and waits until the broker lists them.
func ensureTopics(ctx context.Context, cfg config, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.brokers...), kgo.RequestTimeoutOverhead(10*time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	admin := kadm.NewClient(cl)
	wanted := []string{cfg.topicIn(), cfg.topicOut()}
	for {
		existing, err := admin.ListTopics(ctx, wanted...)
		if err == nil {
			var missing []string
			for _, name := range wanted {
				if !existing.Has(name) {
					missing = append(missing, name)
				}
			}
			if len(missing) == 0 {
				return nil
			}
			// replication 1, as baseline.py; TopicAlreadyExists (a racing creator) is fine
			_, err = admin.CreateTopics(ctx, partitionsPerTopic, 1, nil, missing...)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("topics not ready after %s: %v (%v)", timeout, wanted, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func run() int {
	setLogLevel()
	cfg, err := configFromEnv()
	if err != nil {
		fmt.Fprintf(os.Stderr, "baseline: %s\n", err)
		return 2
	}
	b := newBaseline(cfg)
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		b.stop()
	}()
	started := time.Now()
	err = b.start()
	if err != nil && b.stopping.Err() == nil {
		logf(40, "start: %v", err)
	} else if err == nil {
		b.run()
	}
	b.close()
	b.mu.Lock()
	names := make([]string, 0, len(b.counts))
	for name := range b.counts {
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("%s %d", name, b.counts[name])
	}
	b.mu.Unlock()
	fmt.Fprintf(os.Stderr, "baseline: processed %d in %.1fs (%s)\n", b.processed.Load(),
		time.Since(started).Seconds(), strings.Join(parts, ", "))
	if err != nil && b.stopping.Err() == nil {
		return 1
	}
	return 0
}

func main() { os.Exit(run()) }

var errInterrupted = errors.New("interrupted")
