package outgoing

import (
	"sync"
)

// Bounds of a handoff: messages, and bytes of their stored (compressed)
// bodies, accepted by this instance and waiting in memory for its worker.
const (
	maxHandoffMessages = 4096
	maxHandoffBytes    = 32 << 20
)

// handoff passes messages accepted by this instance straight to its
// running worker, so that the worker does not read back from the database
// what it was just given: a submitted message's row is inserted already
// leased to the worker ("sending", with no attempt counted until its
// outcome), and after the commit the message, with its stored body, goes
// into the worker's queue in memory. The row is durable either way: if
// the process dies before the message is sent, its lease runs out and a
// claim puts it back in the queue (expireLeases); if the worker stops, it
// puts the messages it was handed and did not start back in the queue.
//
// Room in the queue is reserved before the insert (reserve), so that a
// committed message always fits (push); when there is no room, or no
// worker, a submission is queued in the database for a claim as before.
type handoff struct {
	owner string // the worker's lease owner name
	ch    chan OutboxMessage

	mu       sync.Mutex
	closed   bool
	slots    int   // messages that may still be reserved
	bytes    int64 // bytes that may still be reserved
	inFlight sync.WaitGroup
}

func newHandoff(owner string) *handoff {
	return &handoff{
		owner: owner, ch: make(chan OutboxMessage, maxHandoffMessages),
		slots: maxHandoffMessages, bytes: maxHandoffBytes,
	}
}

// reserve takes room for a stored body of size bytes; false when there is
// none or the worker is stopping. A true reserve is followed by exactly
// one push or unreserve.
func (h *handoff) reserve(size int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.slots == 0 || size > h.bytes {
		return false
	}
	h.slots--
	h.bytes -= size
	h.inFlight.Add(1)
	return true
}

// unreserve gives back the room of a message that was not inserted.
func (h *handoff) unreserve(size int64) {
	h.mu.Lock()
	h.slots++
	h.bytes += size
	h.mu.Unlock()
	h.inFlight.Done()
}

// push hands a committed message to the worker, with its stored body and
// without Raw (the worker decodes it when it takes the message); its room
// was reserved, so it never waits.
func (h *handoff) push(m OutboxMessage) {
	h.ch <- m
	h.inFlight.Done()
}

// take returns up to n waiting messages without waiting, first included
// when it is not nil (a message the caller already received from ch).
func (h *handoff) take(n int, first *OutboxMessage) []OutboxMessage {
	var out []OutboxMessage
	if first != nil {
		out = append(out, *first)
	}
	var size int64
	for len(out) < n {
		select {
		case m := <-h.ch:
			out = append(out, m)
			continue
		default:
		}
		break
	}
	for _, m := range out {
		size += int64(len(m.stored))
	}
	if len(out) > 0 {
		h.mu.Lock()
		h.slots += len(out)
		h.bytes += size
		h.mu.Unlock()
	}
	return out
}

// close stops new reservations, waits for the submissions that reserved
// room to hand their messages over (or give up), and returns what was
// handed over and not taken.
func (h *handoff) close() []OutboxMessage {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.inFlight.Wait()
	return h.take(maxHandoffMessages, nil)
}
