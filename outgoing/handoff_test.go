package outgoing

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// TestHandoffAccounting: room is reserved before a message is committed,
// so that a push never waits; a failed insert gives its room back; take
// frees the room of what it takes; close refuses new reservations, waits
// for the reserved ones and returns what was not taken.
func TestHandoffAccounting(t *testing.T) {
	h := newHandoff("w1")
	for i := range maxHandoffMessages {
		if !h.reserve(1) {
			t.Fatalf("reserve %d of %d refused", i+1, maxHandoffMessages)
		}
	}
	if h.reserve(1) {
		t.Fatal("reserve beyond maxHandoffMessages accepted")
	}
	h.unreserve(1) // an insert that failed
	if !h.reserve(1) {
		t.Fatal("the room of a failed insert was not given back")
	}
	for i := range maxHandoffMessages {
		h.push(OutboxMessage{ID: int64(i + 1), stored: []byte{1}}) // never blocks: the room was reserved
	}
	got := h.take(10, nil)
	if len(got) != 10 || got[0].ID != 1 || got[9].ID != 10 {
		t.Fatalf("take(10) = %d messages (first %v), want ids 1..10", len(got), got)
	}
	for range 10 {
		if !h.reserve(1) {
			t.Fatal("the room of taken messages was not freed")
		}
	}
	if h.reserve(1) {
		t.Fatal("more room than was freed")
	}
	// Bytes bound the room too.
	b := newHandoff("w2")
	if !b.reserve(maxHandoffBytes - 10) {
		t.Fatal("a message within the byte bound refused")
	}
	if b.reserve(11) {
		t.Fatal("a message beyond the byte bound accepted")
	}

	// close waits for a reserved message to be pushed, then returns it
	// with the rest; after close nothing is reserved.
	c := newHandoff("w3")
	if !c.reserve(5) {
		t.Fatal("reserve refused")
	}
	c.push(OutboxMessage{ID: 1, stored: make([]byte, 5)})
	if !c.reserve(5) {
		t.Fatal("reserve refused")
	}
	done := make(chan []OutboxMessage)
	go func() { done <- c.close() }()
	// close is waiting for the second reservation; the submitter pushes.
	c.push(OutboxMessage{ID: 2, stored: make([]byte, 5)})
	left := <-done
	if len(left) != 2 || left[0].ID != 1 || left[1].ID != 2 {
		t.Fatalf("close() = %v, want messages 1 and 2", left)
	}
	if c.reserve(1) {
		t.Fatal("reserve after close accepted")
	}
	// take with a message already received puts it first.
	d := newHandoff("w4")
	d.reserve(3)
	d.push(OutboxMessage{ID: 8, stored: make([]byte, 3)})
	m := <-d.ch
	if got := d.take(5, &m); len(got) != 1 || got[0].ID != 8 {
		t.Fatalf("take(5, first) = %v, want message 8", got)
	}
	if !d.reserve(maxHandoffBytes) {
		t.Fatal("the room of a message received outside take was not freed")
	}
}

// TestBodyCodec: a body that shrinks by an eighth is stored as S2 and read
// back byte for byte; a small or incompressible one is stored as it is; a
// corrupt block or an unknown codec is an error, not a wrong message.
func TestBodyCodec(t *testing.T) {
	text := []byte("Subject: report\r\n\r\n" + strings.Repeat("the quarterly report is attached, regards\r\n", 100))
	random := make([]byte, 8192)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	for _, tc := range []struct {
		name  string
		raw   []byte
		codec string
	}{
		{"text", text, bodyS2},
		{"small", []byte("Subject: hi\r\n\r\nhello\r\n"), bodyAsIs},
		{"empty", nil, bodyAsIs},
		{"incompressible", random, bodyAsIs},
	} {
		stored, codec := encodeBody(tc.raw, nil)
		if codec != tc.codec {
			t.Errorf("%s: codec %q, want %q", tc.name, codec, tc.codec)
		}
		if codec == bodyS2 && len(stored) > len(tc.raw)*7/8 {
			t.Errorf("%s: stored %d bytes of %d", tc.name, len(stored), len(tc.raw))
		}
		back, err := decodeBody(stored, codec)
		if err != nil || !bytes.Equal(back, tc.raw) {
			t.Errorf("%s: decodeBody() = %d bytes, %v; want the %d bytes back", tc.name, len(back), err, len(tc.raw))
		}
	}
	// Bodies encoded through one pool of scratch buffers do not share it.
	var pool sync.Pool
	stored, _ := encodeBody(text, &pool)
	other := bytes.ToUpper(text)
	if stored2, codec := encodeBody(other, &pool); codec != bodyS2 {
		t.Fatalf("second body: codec %q", codec)
	} else if back, err := decodeBody(stored2, codec); err != nil || !bytes.Equal(back, other) {
		t.Fatalf("second body did not come back: %v", err)
	}
	if back, err := decodeBody(stored, bodyS2); err != nil || !bytes.Equal(back, text) {
		t.Fatalf("first body changed after the scratch buffer was reused: %v", err)
	}
	if _, err := decodeBody(stored[:len(stored)/2], bodyS2); err == nil {
		t.Error("a truncated S2 body decoded without an error")
	}
	if _, err := decodeBody(text, "zstd"); err == nil || !strings.Contains(err.Error(), "zstd") {
		t.Errorf("unknown codec: err = %v, want one naming it", err)
	}
}
