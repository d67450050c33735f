package imapsync

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/klauspost/compress/s2"
)

// The b64s2 codec stores a message's base64 runs as the bytes they encode
// and the rest of it (headers, boundaries, text parts) S2-compressed, and
// reads back the message byte for byte.
//
// # Runs
//
// A run is found in the raw bytes, never from the MIME structure (a
// message may lie about it, and a run needs no parsing to rebuild): lines
// of base64 text, the first starting the message or following an LF, where
//
//   - every line but the last is exactly L characters of the alphabet
//     A-Z a-z 0-9 + / (L a multiple of 4, at least 4) followed by the same
//     line ending, CRLF or LF;
//   - the last line is 4 to L characters, a multiple of 4, and may end
//     with "=" or "==" padding; it ends with the same line ending, or ends
//     the message without one ("open");
//   - every line decodes under base64.StdEncoding.Strict() to exactly 3/4
//     of its length less its padding.
//
// Strict decoding refuses non-zero bits under the padding, so each line is
// the one canonical encoding of its bytes; it skips CR and LF, but a line
// that held one would decode to fewer bytes than the count above, so no
// such line is taken. (The lines between a run's first and last, most of
// it, go through decodeQuanta instead, which takes the same ones faster.) Lines are split on LF alone, which never occurs in
// a line's text. A run is thus rebuilt exactly from its decoded bytes n, L,
// its line ending and whether it is open: the bytes in chunks of 3L/4 (a
// multiple of 3, so padding only in the last chunk), each encoded, each
// followed by the line ending but the last one of an open run. The last
// line decodes to 1 to 3L/4 bytes, so its chunk is the last chunk, and
// encodes to the line's length (4*ceil(r/3) for r = 3m/4 less at most 2).
//
// A candidate shorter than minRunText stays literal, and so does every line
// that breaks the rules (a stray character, a different length or line
// ending, a non-canonical final quantum such as "QR=="); the scan resumes
// after the candidate's last line, so that a line is decoded once, or up to
// three times when it ends a run (as a full line, as a last line, as the
// start of the next): the scan is linear in the message.
//
// # Container
//
//	byte     format version, b64Version
//	uvarint  the message's length
//	byte     how the packed stream is stored: 0 as is, 1 one S2 block
//	uvarint  the packed stream's stored length, then its bytes
//	uvarint  the stored stream's length, then its bytes (as is)
//	then, to the end, one entry a run, in message order:
//	uvarint  literal bytes before the run, since the previous run
//	uvarint  L | shapeLF | shapeOpen (L is a multiple of 4)
//	uvarint  n<<1 | 1 if its decoded bytes are in the packed stream
//
// The packed stream is the message's literal bytes and the decoded bytes
// of the runs S2 shrinks (a base64 text or HTML part), in message order;
// the literal bytes after the last run end it. The stored stream is the
// decoded bytes of the other runs (attachments of compressed data), which
// S2 would only copy: one S2 block over both gives up on the compressible
// part after a long incompressible one.

// Bounds and layout of the b64s2 codec.
const (
	b64Version = 1
	// minRunText is the least base64 text (line endings included) stored
	// decoded: its entry costs 3 to 10 bytes and saves a quarter of it,
	// and text lines that happen to be base64 seldom add up to it.
	minRunText = 1 << 10
	shapeLF    = 1 // lines end with LF (else CRLF)
	shapeOpen  = 2 // the last line ends the message without a line ending
	// maxRunGrowth bounds what a run's decoded byte becomes in the
	// message: 4*ceil(n/3) characters and a line ending of at most 2 per
	// 4 of them is at most 6*ceil(n/3) <= 6n bytes for n >= 1.
	maxRunGrowth = 6
)

// strictB64 is the standard encoding with canonical final quanta; never
// modified.
var strictB64 = base64.StdEncoding.Strict()

// b64Run is a run of base64 lines found in a message.
type b64Run struct {
	start, end int // its bytes in the message, line endings included
	bin, n     int // its decoded bytes in rawEncoder.bin
	shape      int // L | shapeLF | shapeOpen
}

// scanRuns finds the runs of body of c.minRun bytes or more, decoding them into
// c.bin, and returns how many of body's bytes they cover.
func (c *rawEncoder) scanRuns(body []byte) int {
	c.runs, c.bin = c.runs[:0], c.bin[:0]
	covered, minRun := 0, c.minRun
	if minRun == 0 {
		minRun = minRunText
	}
	for p := 0; p < len(body); {
		// Most lines of text fail on their length or their first
		// characters: skip them without a call to Decode. (A line of
		// 8 characters or fewer with padding could only be a run of
		// its own, of at most 10 bytes.)
		if text, _, next := b64Line(body, p); len(text) < 4 || len(text)%4 != 0 || !b64Prefix(text) {
			p = next
			continue
		}
		r := c.run(body, p)
		switch {
		case r.n == 0:
			// The line at p starts no run; r.end is the next line.
		case r.end-r.start >= minRun:
			c.runs = append(c.runs, r)
			covered += r.end - r.start
		default:
			// Too short: literal. A run starting on one of its
			// lines would end where this one did.
			c.bin = c.bin[:r.bin]
		}
		p = r.end
	}
	return covered
}

// b64Prefix reports whether text starts with 8 characters of the base64
// alphabet (4 when that is all it has).
func b64Prefix(text []byte) bool {
	for _, ch := range text[:min(len(text), 8)] {
		if !('A' <= ch && ch <= 'Z' || 'a' <= ch && ch <= 'z' || '0' <= ch && ch <= '9' || ch == '+' || ch == '/') {
			return false
		}
	}
	return true
}

// Line endings of a line.
const (
	eolCRLF = iota
	eolLF
	eolNone // the last line of the message, without one
)

// b64Line returns the line of body at p: its text without its line ending,
// the ending's kind and where the next line starts.
func b64Line(body []byte, p int) (text []byte, eol, next int) {
	nl := bytes.IndexByte(body[p:], '\n')
	if nl < 0 {
		return body[p:], eolNone, len(body)
	}
	end := p + nl
	if end > p && body[end-1] == '\r' {
		return body[p : end-1], eolCRLF, end + 1
	}
	return body[p:end], eolLF, end + 1
}

// run reads the run starting at p (see the rules above), decoding it at
// the end of c.bin. When the line at p starts none, the run has no
// decoded bytes and ends where the next line starts.
func (c *rawEncoder) run(body []byte, p int) b64Run {
	r := b64Run{start: p, end: p, bin: len(c.bin)}
	lineLen, runEOL, eolText := 0, eolCRLF, "\r\n"
	for q := p; q < len(body); {
		if q != p && c.fullLine(body[q:], lineLen, eolText) {
			q += lineLen + len(eolText)
			r.end = q
			continue
		}
		text, eol, next := b64Line(body, q)
		m := len(text)
		if q == p {
			lineLen, runEOL = m, eol
			if eol == eolLF {
				eolText = "\n"
			}
			r.end = next // unless a run is found
		}
		if m < 4 || m%4 != 0 || m > lineLen || (eol != runEOL && eol != eolNone) {
			break
		}
		pad := 0
		if text[m-1] == '=' {
			pad++
			if text[m-2] == '=' {
				pad++
			}
		}
		// Room for 8 more bytes than the line needs keeps Decode on
		// its fast path (8 characters at a time) to the line's end.
		want := m / 4 * 3
		c.bin = slices.Grow(c.bin, want+8)
		dst := c.bin[len(c.bin):cap(c.bin)]
		if n, err := strictB64.Decode(dst, text); err != nil || n != want-pad {
			break // a CR inside the line decodes to fewer bytes
		}
		c.bin = c.bin[:len(c.bin)+want-pad]
		r.end = next
		if m < lineLen || pad > 0 || eol == eolNone {
			if eol == eolNone {
				r.shape |= shapeOpen
			}
			break // the last line
		}
		q = next
	}
	if r.n = len(c.bin) - r.bin; r.n == 0 {
		return r
	}
	if runEOL == eolLF {
		r.shape |= shapeLF
	}
	r.shape |= lineLen
	return r
}

// fullLine decodes a line that is not a run's last to the end of c.bin
// when b starts with n characters of the alphabet and the line ending
// eol, and reports whether it did: the lines run would take as such,
// found without looking for the line's end (a CR, LF or "=" among the n
// characters is outside the alphabet).
func (c *rawEncoder) fullLine(b []byte, n int, eol string) bool {
	if len(b) < n+len(eol) || string(b[n:n+len(eol)]) != eol {
		return false
	}
	want := n / 4 * 3
	c.bin = slices.Grow(c.bin, want+8) // decodeQuanta writes 8 bytes at a time
	if !decodeQuanta(c.bin[len(c.bin):cap(c.bin)], b[:n]) {
		return false
	}
	c.bin = c.bin[:len(c.bin)+want]
	return true
}

// b64Quanta maps each byte, at each place of a quantum of 4 characters, to
// its 6 bits shifted into place in the quantum's 24, or to all ones when
// it is outside the alphabet.
type b64Quanta [4][256]uint32

// b64Table is the table of decodeQuanta; never modified.
var b64Table = func() *b64Quanta {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var t b64Quanta
	for place := range t {
		for b := range t[place] {
			t[place][b] = 0xffffffff
		}
		for v, b := range []byte(alphabet) {
			t[place][b] = uint32(v) << (18 - 6*place)
		}
	}
	return &t
}()

// decodeQuanta decodes src, whole quanta of the alphabet without padding,
// into dst, and reports whether every character was of the alphabet and
// dst had room. Every 4 characters of the alphabet are the one encoding of
// their 3 bytes, so a line decoded here reads back exactly. It is about
// 1.7 times as fast as base64.Encoding.Decode, for the lines of a run but
// its first and last; dst needs room for 8 bytes at a time to go fastest.
func decodeQuanta(dst, src []byte) bool {
	t := b64Table
	var bad uint32
	for len(src) >= 8 && len(dst) >= 8 {
		x := t[0][src[0]] | t[1][src[1]] | t[2][src[2]] | t[3][src[3]]
		y := t[0][src[4]] | t[1][src[5]] | t[2][src[6]] | t[3][src[7]]
		bad |= x | y
		binary.BigEndian.PutUint64(dst, uint64(x)<<40|uint64(y)<<16)
		src, dst = src[8:], dst[6:]
	}
	for len(src) >= 4 && len(dst) >= 3 {
		x := t[0][src[0]] | t[1][src[1]] | t[2][src[2]] | t[3][src[3]]
		bad |= x
		dst[0], dst[1], dst[2] = byte(x>>16), byte(x>>8), byte(x)
		src, dst = src[4:], dst[3:]
	}
	return bad>>24 == 0 && len(src) == 0
}

// container returns body as a b64s2 container of the runs scanRuns found.
func (c *rawEncoder) container(body []byte) []byte {
	packed, desc := c.packed[:0], c.desc[:0]
	stored, prev := 0, 0
	for _, r := range c.runs {
		packed = append(packed, body[prev:r.start]...)
		desc = binary.AppendUvarint(desc, uint64(r.start-prev))
		desc = binary.AppendUvarint(desc, uint64(r.shape))
		bin := c.bin[r.bin : r.bin+r.n]
		sample := bin
		if len(sample) > sampleBytes {
			mid := len(sample) / 2
			sample = sample[mid-sampleBytes/2 : mid+sampleBytes/2]
		}
		if c.shrinks(sample) {
			packed = append(packed, bin...)
			desc = binary.AppendUvarint(desc, uint64(r.n)<<1|1)
		} else {
			// Compacted in place: stored <= r.bin, and the runs
			// after this one lie after r.bin+r.n.
			if stored != r.bin {
				copy(c.bin[stored:], bin)
			}
			stored += r.n
			desc = binary.AppendUvarint(desc, uint64(r.n)<<1)
		}
		prev = r.end
	}
	packed = append(packed, body[prev:]...)
	c.packed, c.desc = packed, desc

	kind, pdata := byte(0), packed
	if enc := c.s2Shrinks(packed); enc != nil {
		kind, pdata = 1, enc
	}
	sdata := c.bin[:stored]
	size := 1 + uvarintSize(uint64(len(body))) + 1 + uvarintSize(uint64(len(pdata))) + len(pdata) +
		uvarintSize(uint64(len(sdata))) + len(sdata) + len(desc)
	out := make([]byte, 0, size)
	out = append(out, b64Version)
	out = binary.AppendUvarint(out, uint64(len(body)))
	out = append(out, kind)
	out = binary.AppendUvarint(out, uint64(len(pdata)))
	out = append(out, pdata...)
	out = binary.AppendUvarint(out, uint64(len(sdata)))
	out = append(out, sdata...)
	return append(out, desc...)
}

// decodeB64Container returns the message a b64s2 container holds. The
// container is untrusted: every length is checked against what is left
// and against the message's length, itself at most maxDecodedRaw and
// maxRunGrowth times the streams, before anything is allocated for it.
func decodeB64Container(raw []byte) ([]byte, error) {
	d := containerReader{b: raw}
	if v := d.byte(); d.err == nil && v != b64Version {
		return nil, fmt.Errorf("format version %d, want %d", v, b64Version)
	}
	total := d.uvarint()
	kind := d.byte()
	pdata := d.bytes(d.uvarint())
	sdata := d.bytes(d.uvarint())
	if d.err != nil {
		return nil, fmt.Errorf("header: %w", d.err)
	}
	if total > maxDecodedRaw {
		return nil, fmt.Errorf("container claims %d bytes", total)
	}
	packedLen := len(pdata)
	switch kind {
	case 0:
	case 1:
		n, err := s2.DecodedLen(pdata)
		if err != nil {
			return nil, fmt.Errorf("packed stream: %w", err)
		}
		if uint64(n) > total {
			return nil, fmt.Errorf("packed stream claims %d bytes of a %d-byte message", n, total)
		}
		packedLen = n
	default:
		return nil, fmt.Errorf("packed stream kind %d", kind)
	}
	if total > maxRunGrowth*uint64(packedLen+len(sdata)) {
		return nil, fmt.Errorf("container claims %d bytes from %d", total, packedLen+len(sdata))
	}
	packed := pdata
	if kind == 1 {
		var err error
		if packed, err = s2.Decode(make([]byte, packedLen), pdata); err != nil {
			return nil, fmt.Errorf("packed stream: %w", err)
		}
	}

	out := make([]byte, 0, total)
	left := func() uint64 { return total - uint64(len(out)) }
	for i := 0; len(d.b) > 0; i++ {
		lit, shape, nn := d.uvarint(), d.uvarint(), d.uvarint()
		if d.err != nil {
			return nil, fmt.Errorf("run %d: %w", i, d.err)
		}
		if lit > uint64(len(packed)) || lit > left() {
			return nil, fmt.Errorf("run %d: %d literal bytes, %d left", i, lit, min(uint64(len(packed)), left()))
		}
		out, packed = append(out, packed[:lit]...), packed[lit:]

		lineLen, n := shape&^(shapeLF|shapeOpen), nn>>1
		src := &sdata
		if nn&1 == 1 {
			src = &packed
		}
		if lineLen < 4 || lineLen > total || n == 0 || n > uint64(len(*src)) {
			return nil, fmt.Errorf("run %d: line length %d, %d bytes of %d", i, lineLen, n, len(*src))
		}
		eol := "\r\n"
		if shape&shapeLF != 0 {
			eol = "\n"
		}
		perLine := lineLen / 4 * 3
		lines := (n + perLine - 1) / perLine
		text := (n+2)/3*4 + lines*uint64(len(eol))
		if shape&shapeOpen != 0 {
			text -= uint64(len(eol))
		}
		if text > left() {
			return nil, fmt.Errorf("run %d: %d bytes of text, %d left", i, text, left())
		}
		bin := (*src)[:n]
		*src = (*src)[n:]
		for len(bin) > 0 {
			k := min(perLine, uint64(len(bin)))
			out = base64.StdEncoding.AppendEncode(out, bin[:k])
			if bin = bin[k:]; len(bin) > 0 || shape&shapeOpen == 0 {
				out = append(out, eol...)
			}
		}
	}
	if uint64(len(packed)) != left() {
		return nil, fmt.Errorf("%d literal bytes after the last run, %d left", len(packed), left())
	}
	out = append(out, packed...)
	if len(sdata) > 0 {
		return nil, fmt.Errorf("%d stored bytes left over", len(sdata))
	}
	return out, nil
}

// containerReader reads a b64s2 container; its first error sticks.
type containerReader struct {
	b   []byte
	err error
}

var errContainerShort = errors.New("container ends early")

func (d *containerReader) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errContainerShort
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *containerReader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errors.New("bad uvarint")
		if n == 0 {
			d.err = errContainerShort
		}
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *containerReader) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%d bytes claimed, %d left: %w", n, len(d.b), errContainerShort)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func uvarintSize(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}
