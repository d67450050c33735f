package imapsync

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/s2"
)

// How messages.raw is encoded (column raw_codec, migration 7).
const (
	codecNone = "none" // the bytes as the server sent them
	codecS2   = "s2"   // one S2 block (github.com/klauspost/compress/s2)
	codecGzip = "gzip" // rows written before migration 7
)

// Bounds of the raw encoder.
const (
	// keepScratch is the largest scratch buffer an encoder keeps between
	// messages; a larger message gets a buffer of its own.
	keepScratch = 4 << 20
	// maxDecodedRaw bounds what a stored S2 block may claim to decode to
	// (a message is at most Config.MaxMessageBytes when it is stored).
	maxDecodedRaw = 1 << 30
	// A message larger than sampleAbove is compressed only when a
	// sampleBytes sample from its middle shrinks: large messages are
	// mostly an attachment, and the sample spares compressing it whole.
	sampleAbove = 256 << 10
	sampleBytes = 64 << 10
)

// rawEncoder encodes raw messages for messages.raw; one per fetch worker.
//
// S2 compresses at about 2 GB/s and gives up quickly on data it cannot
// shrink; text and HTML shrink to a third. Attachments (base64 of
// compressed data) do not shrink by an eighth, so they are stored as they
// came, without a copy. gzip at its fastest took about 8 ns a byte on the
// benchmark machine, more than SQLite's or PostgreSQL's own write of the
// byte, to save a quarter of it (docs/benchmarks.md, "IMAP sync").
type rawEncoder struct {
	scratch []byte
}

// encode returns what to store for body and its codec. The result is body
// itself with codecNone, or a new slice.
func (c *rawEncoder) encode(body []byte) ([]byte, string) {
	if len(body) > sampleAbove {
		mid := len(body) / 2
		if !c.shrinks(body[mid-sampleBytes/2 : mid+sampleBytes/2]) {
			return body, codecNone
		}
	}
	n := s2.MaxEncodedLen(len(body))
	if n < 0 {
		return body, codecNone // too large for one block; never at MaxMessageBytes
	}
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	enc := s2.Encode(c.scratch[:n], body)
	var out []byte
	codec := codecNone
	if len(enc) <= len(body)-len(body)/8 { // as in shrinks
		out, codec = bytes.Clone(enc), codecS2
	} else {
		out = body
	}
	if cap(c.scratch) > keepScratch {
		c.scratch = nil
	}
	return out, codec
}

// shrinks reports whether S2 shrinks b by an eighth or more.
func (c *rawEncoder) shrinks(b []byte) bool {
	n := s2.MaxEncodedLen(len(b))
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	return len(s2.Encode(c.scratch[:n], b)) <= len(b)-len(b)/8
}

// openRaw returns a reader of the message stored as raw with codec.
func openRaw(codec string, raw []byte) (io.ReadCloser, error) {
	switch codec {
	case codecNone:
		return io.NopCloser(bytes.NewReader(raw)), nil
	case codecS2:
		n, err := s2.DecodedLen(raw)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		if n > maxDecodedRaw {
			return nil, fmt.Errorf("s2: block claims %d bytes", n)
		}
		b, err := s2.Decode(make([]byte, n), raw)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	case codecGzip, "":
		return gzip.NewReader(bytes.NewReader(raw))
	default:
		return nil, errors.New("unknown raw codec " + codec)
	}
}
