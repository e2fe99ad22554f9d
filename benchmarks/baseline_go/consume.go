package main

// The Kafka side: the consumer loop, the at-least-once offset rule, rebalances.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type topicPartition struct {
	topic     string
	partition int32
}

// progress is one partition's records in fetch order, and how far they are done.
// Records finish in any order; the committable offset is one past the longest prefix of
// done records, so a commit never covers a record still running (or never started).
// Guarded by baseline.mu.
type progress struct {
	pending     []*entry // offsets increasing; pending[head:] are not yet committable
	head        int
	entries     map[int64]*entry
	committable int64 // -1: nothing done yet
	committed   int64 // -1: nothing committed yet
	revoked     bool
	running     sync.WaitGroup
}

type entry struct {
	offset int64
	done   bool
}

func newProgress() *progress {
	return &progress{entries: map[int64]*entry{}, committable: -1, committed: -1}
}

func (p *progress) add(offset int64) {
	e := &entry{offset: offset}
	p.pending = append(p.pending, e)
	p.entries[offset] = e
}

func (p *progress) done(offset int64) {
	e, ok := p.entries[offset]
	if !ok {
		return
	}
	delete(p.entries, offset)
	e.done = true
	for p.head < len(p.pending) && p.pending[p.head].done {
		p.committable = p.pending[p.head].offset + 1
		p.pending[p.head] = nil
		p.head++
	}
	if p.head > 1024 && p.head*2 > len(p.pending) { // drop the done prefix
		p.pending = append(p.pending[:0:0], p.pending[p.head:]...)
		p.head = 0
	}
}

// --- partitions ---------------------------------------------------------------------

func (b *baseline) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	n := 0
	b.mu.Lock()
	for topic, partitions := range assigned {
		for _, p := range partitions {
			b.partitions[topicPartition{topic, p}] = newProgress()
			n++
		}
	}
	b.mu.Unlock()
	if n > 0 && b.ready.CompareAndSwap(false, true) {
		fmt.Println("baseline ready")
	}
}

// revoked drops the records not started, lets the running ones finish (bounded), commits.
func (b *baseline) revoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	var tps []topicPartition
	var progresses []*progress
	b.mu.Lock()
	for topic, partitions := range revoked {
		for _, p := range partitions {
			tp := topicPartition{topic, p}
			if pr, ok := b.partitions[tp]; ok {
				pr.revoked = true
				tps = append(tps, tp)
				progresses = append(progresses, pr)
			}
		}
	}
	b.mu.Unlock()
	deadline := time.Now().Add(b.cfg.fraudTimeout + b.cfg.processorTimeout)
	for _, pr := range progresses {
		waitTimeout(&pr.running, max(time.Until(deadline), 0))
	}
	commitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	b.commit(commitCtx, tps)
	cancel()
	b.mu.Lock()
	for _, tp := range tps {
		delete(b.partitions, tp)
	}
	b.mu.Unlock()
}

// commit commits the committable offsets of the owned partitions (of `only`, if given).
func (b *baseline) commit(ctx context.Context, only []topicPartition) {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	wanted := map[topicPartition]int64{}
	b.mu.Lock()
	for tp, pr := range b.partitions {
		if only != nil && !contains(only, tp) {
			continue
		}
		if pr.committable < 0 || pr.committable == pr.committed {
			continue
		}
		if offsets[tp.topic] == nil {
			offsets[tp.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[tp.topic][tp.partition] = kgo.EpochOffset{Epoch: -1, Offset: pr.committable}
		wanted[tp] = pr.committable
	}
	b.mu.Unlock()
	if len(wanted) == 0 {
		return
	}
	b.consumer.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest,
		resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			logf(30, "commit failed: %v", err)
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, topic := range resp.Topics {
			for _, p := range topic.Partitions {
				tp := topicPartition{topic.Topic, p.Partition}
				if p.ErrorCode != 0 {
					logf(20, "commit skipped for %s/%d (error %d)", tp.topic, tp.partition, p.ErrorCode)
					continue
				}
				if pr, ok := b.partitions[tp]; ok {
					pr.committed = wanted[tp]
				}
			}
		}
	})
}

func contains(tps []topicPartition, tp topicPartition) bool {
	for _, t := range tps {
		if t == tp {
			return true
		}
	}
	return false
}

// --- the loop -----------------------------------------------------------------------

type fetched struct {
	progress *progress
	records  []*kgo.Record
}

func (b *baseline) run() {
	var helpers sync.WaitGroup
	helpers.Add(2)
	go func() { defer helpers.Done(); b.every(commitEvery, func() { b.commit(b.stopping, nil) }) }()
	go func() {
		defer helpers.Done()
		b.every(reportEvery, func() {
			if b.ready.Load() { // "baseline ready" is always the first line
				fmt.Printf("baseline processed %d\n", b.processed.Load())
			}
		})
	}()
	defer helpers.Wait()
	for b.stopping.Err() == nil {
		fetches := b.consumer.PollRecords(b.stopping, b.cfg.concurrency)
		if fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if b.stopping.Err() == nil {
				logf(30, "fetch %s/%d: %v", topic, partition, err)
			}
		})
		var batch []fetched
		b.mu.Lock()
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			pr := b.partitions[topicPartition{p.Topic, p.Partition}]
			if pr == nil || pr.revoked || len(p.Records) == 0 {
				return
			}
			for _, r := range p.Records {
				pr.add(r.Offset)
			}
			batch = append(batch, fetched{pr, p.Records})
		})
		b.mu.Unlock()
		if !b.dispatch(batch) {
			return
		}
	}
}

// dispatch starts the records of a fetch, one partition after the other (round robin),
// each partition in order, each once a slot is free; false when stopping.
func (b *baseline) dispatch(batch []fetched) bool {
	for index := 0; ; index++ {
		more := false
		for _, f := range batch {
			if index >= len(f.records) {
				continue
			}
			more = true
			select {
			case b.slots <- struct{}{}:
			case <-b.stopping.Done():
				return false
			}
			if b.stopping.Err() != nil {
				<-b.slots
				return false
			}
			b.mu.Lock()
			revoked := f.progress.revoked
			if !revoked {
				f.progress.running.Add(1)
				b.tasks.Add(1)
			}
			b.mu.Unlock()
			if revoked {
				<-b.slots
				continue
			}
			go b.one(f.progress, f.records[index])
		}
		if !more {
			return true
		}
	}
}

func (b *baseline) every(interval time.Duration, fn func()) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-b.stopping.Done():
			return
		case <-ticker.C:
			fn()
		}
	}
}

// pause sleeps, or less when stopping.
func (b *baseline) pause(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-b.stopping.Done():
	}
}
