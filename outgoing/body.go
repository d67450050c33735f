package outgoing

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/klauspost/compress/s2"
)

// Codecs of outbox_bodies.codec: how a stored body is encoded.
const (
	bodyAsIs = ""   // the message's bytes
	bodyS2   = "s2" // an S2 block of them
)

// minCompressedBody is the size below which a body is stored as it is.
const minCompressedBody = 1 << 10

// maxPooledScratch: larger messages get a scratch buffer of their own, so
// that the pool does not keep buffers of many megabytes.
const maxPooledScratch = 1 << 20

// encodeBody returns what to store for a message's bytes, and its codec:
// an S2 block when that is at least an eighth smaller (text and HTML,
// about half), else the bytes themselves (attachments, which are base64 of
// data usually compressed already). A body is written once and, when this
// instance's worker sends it (handoff.go), never read back: the smaller
// write is what counts, for the database's log on either dialect.
//
// scratch, when not nil, lends the buffer S2 writes into (*[]byte values).
func encodeBody(raw []byte, scratch *sync.Pool) ([]byte, string) {
	if len(raw) < minCompressedBody {
		return raw, bodyAsIs
	}
	n := s2.MaxEncodedLen(len(raw))
	if n < 0 {
		return raw, bodyAsIs // too large for a block: no message is
	}
	buf := new([]byte)
	if scratch != nil && n <= maxPooledScratch {
		if b, ok := scratch.Get().(*[]byte); ok {
			buf = b
		}
		defer scratch.Put(buf)
	}
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	enc := s2.Encode((*buf)[:n], raw)
	if len(enc) > len(raw)-len(raw)/8 {
		return raw, bodyAsIs
	}
	// A copy of its own size: the stored body may wait in memory
	// (handoff.go), and the scratch buffer is for the next message.
	return bytes.Clone(enc), bodyS2
}

// decodeBody returns a stored body's message bytes.
func decodeBody(stored []byte, codec string) ([]byte, error) {
	switch codec {
	case bodyAsIs:
		return stored, nil
	case bodyS2:
		raw, err := s2.Decode(nil, stored)
		if err != nil {
			return nil, fmt.Errorf("decode an s2 message body: %w", err)
		}
		return raw, nil
	default:
		return nil, fmt.Errorf("message body in an unknown codec %q", codec)
	}
}
