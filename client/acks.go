package client

import (
	"fmt"
	"time"
)

// ackQueue mirrors ic-websocket-js's AckMessagesQueue: the sequence numbers of sent ws_messages
// waiting for the canister's AckMessage. The watchdog itself (a timer restarted on every ack) lives
// in Conn; this type holds the bookkeeping so it can be tested without timers.
type ackQueue struct {
	expiration time.Duration
	items      []ackItem
}

type ackItem struct {
	seq     uint64
	addedAt time.Time
}

// add records a sent sequence number; numbers must grow.
func (q *ackQueue) add(seq uint64, now time.Time) error {
	if n := len(q.items); n > 0 && seq <= q.items[n-1].seq {
		return fmt.Errorf("ack queue: sequence number %d is not greater than last %d", seq, q.items[n-1].seq)
	}
	q.items = append(q.items, ackItem{seq: seq, addedAt: now})
	return nil
}

// ack removes everything up to and including seq. Like the SDK it fails when seq is above the last
// number sent (and not in the queue), and it reports the numbers still waiting that are older than
// the expiration window.
func (q *ackQueue) ack(seq uint64, now time.Time) (expired []uint64, err error) {
	idx := -1
	for i, it := range q.items {
		if it.seq == seq {
			idx = i
			break
		}
	}
	if idx >= 0 {
		q.items = q.items[idx+1:]
	} else if n := len(q.items); n > 0 && seq > q.items[n-1].seq {
		return nil, fmt.Errorf("ack for sequence number %d, but the last sent is %d", seq, q.items[n-1].seq)
	} else if n > 0 && seq > q.items[0].seq {
		// Not in the queue but inside its range (e.g. already trimmed): drop what it covers.
		i := 0
		for i < n && q.items[i].seq <= seq {
			i++
		}
		q.items = q.items[i:]
	}
	for _, it := range q.items {
		if now.Sub(it.addedAt) >= q.expiration {
			expired = append(expired, it.seq)
		}
	}
	return expired, nil
}

// pending lists the numbers still waiting.
func (q *ackQueue) pending() []uint64 {
	out := make([]uint64, 0, len(q.items))
	for _, it := range q.items {
		out = append(out, it.seq)
	}
	return out
}
