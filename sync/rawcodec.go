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
	codecNone = "none"  // the bytes as the server sent them
	codecS2   = "s2"    // one S2 block (github.com/klauspost/compress/s2)
	codecGzip = "gzip"  // rows written before migration 7
	codecB64  = "b64s2" // base64 runs decoded, the rest S2 (rawcodec_b64.go)
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
// compressed data) do not shrink by an eighth under S2, but their base64
// text is 4/3 of the bytes it encodes: a message whose base64 runs make an
// eighth of it or more is stored as a b64s2 container (rawcodec_b64.go),
// the runs decoded, which saves a quarter of them. gzip at its fastest
// took about 8 ns a byte on the benchmark machine, more than SQLite's or
// PostgreSQL's own write of the byte, to save a quarter of attachments
// (docs/benchmarks.md, "IMAP sync"); finding and decoding the runs takes
// about 1 ns a byte, here in the fetch workers rather than in the one
// database writer.
//
// The scratch buffers are reused from message to message and dropped when
// they grew past keepScratch.
type rawEncoder struct {
	scratch []byte   // S2 output
	bin     []byte   // the decoded bytes of the runs found
	packed  []byte   // a b64s2 container's packed stream
	desc    []byte   // a b64s2 container's run list
	runs    []b64Run // the runs found
	minRun  int      // least run stored decoded; 0 is minRunText (tests set less)
}

// encode returns what to store for body and its codec. The result is body
// itself with codecNone, or a new slice.
func (c *rawEncoder) encode(body []byte) ([]byte, string) {
	defer c.trim()
	// Runs under an eighth of the message would save less than 3 % of
	// it: such a message keeps the codec it had before b64s2.
	if covered := c.scanRuns(body); covered > 0 && covered >= len(body)/8 {
		return c.container(body), codecB64
	}
	if enc := c.s2Shrinks(body); enc != nil {
		return bytes.Clone(enc), codecS2
	}
	return body, codecNone
}

// s2Shrinks returns b as one S2 block in c.scratch when that shrinks it by
// an eighth or more, else nil. When b is larger than sampleAbove, a sample
// from its middle must shrink first.
func (c *rawEncoder) s2Shrinks(b []byte) []byte {
	if len(b) > sampleAbove {
		mid := len(b) / 2
		if !c.shrinks(b[mid-sampleBytes/2 : mid+sampleBytes/2]) {
			return nil
		}
	}
	n := s2.MaxEncodedLen(len(b))
	if n < 0 {
		return nil // too large for one block; never at MaxMessageBytes
	}
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	enc := s2.Encode(c.scratch[:n], b)
	if len(enc) > len(b)-len(b)/8 { // as in shrinks
		return nil
	}
	return enc
}

// shrinks reports whether S2 shrinks b by an eighth or more.
func (c *rawEncoder) shrinks(b []byte) bool {
	n := s2.MaxEncodedLen(len(b))
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	return len(s2.Encode(c.scratch[:n], b)) <= len(b)-len(b)/8
}

// trim drops the scratch buffers a large message grew past keepScratch.
func (c *rawEncoder) trim() {
	if cap(c.scratch) > keepScratch {
		c.scratch = nil
	}
	if cap(c.bin) > keepScratch {
		c.bin = nil
	}
	if cap(c.packed) > keepScratch {
		c.packed = nil
	}
	if cap(c.desc) > keepScratch {
		c.desc = nil
	}
	if cap(c.runs) > keepScratch/minRunText { // more runs than a kept message holds
		c.runs = nil
	}
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
	case codecB64:
		b, err := decodeB64Container(raw)
		if err != nil {
			return nil, fmt.Errorf("b64s2: %w", err)
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	case codecGzip, "":
		return gzip.NewReader(bytes.NewReader(raw))
	default:
		return nil, errors.New("unknown raw codec " + codec)
	}
}

// DecodeRaw returns the message stored in messages.raw with the codec in
// messages.raw_codec, for readers of the table outside this package (tests,
// tools); the engine's own reads go through RawMessage.
func DecodeRaw(codec string, raw []byte) ([]byte, error) {
	r, err := openRaw(codec, raw)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
