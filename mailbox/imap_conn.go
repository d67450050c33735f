package mailbox

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// maxGreetingLen bounds how much of the server's first line imapConn keeps.
const maxGreetingLen = 1024

// maxResponseBytes bounds one server response, literals included, except
// the message bodies a FETCH streams (BODY[…], BINARY[…], RFC822…), which
// go-imap hands over as they arrive. go-imap v2 reads every other part of a
// response into memory with no limit of its own — a line, an atom, a
// quoted string, a flag list, a literal inside an ENVELOPE or a LIST — and
// a flag list costs it several times its size on the wire, so a server
// that never ends a line, or announces a 2 GiB literal there, would grow
// the heap for as long as it keeps sending. 1 MiB is far beyond what a
// real response needs, except SEARCH (and ESEARCH, SORT), whose numbers
// go-imap reads one at a time into ranges: those get maxSearchBytes, a
// million UIDs without ESEARCH.
//
// maxNesting bounds the parentheses of a response: go-imap parses a
// BODYSTRUCTURE by recursion without a depth limit, and wraps its error
// once per level, so a server sending a million "(" would keep its reader
// busy for hours, out of reach of any deadline (closing the connection
// does not stop a parser that has its bytes already), or overflow its
// stack, which no recover catches. Real responses nest a few levels.
const (
	maxResponseBytes = 1 << 20
	maxSearchBytes   = 8 << 20
	maxNesting       = 128
)

// ErrResponseTooLong: a server response other than a message body passed
// maxResponseBytes or maxNesting, or a clear-text line before STARTTLS
// passed its bound; the connection was closed.
var ErrResponseTooLong = errors.New("the server sent a response larger than mailsync accepts")

// imapConn is the connection imapclient reads and writes. It adds two
// things go-imap v2 lacks:
//
//   - A cap on deadlines. imapclient sets its own read and write deadlines
//     (30 s per response, none while idle), which would override one set
//     on the connection underneath. While a limit is set, every deadline
//     it asks for is cut to the limit, so a stalled server cannot hold a
//     step past the dial's deadline; clearing the limit restores what
//     imapclient asked for.
//   - The server's first line, the greeting, which imapclient reads but
//     does not expose. It is kept (up to maxGreetingLen bytes) for the
//     report.
//   - A bound on each response (maxResponseBytes, see respLimit): past it
//     every read fails with ErrResponseTooLong, which ends imapclient's
//     reader and closes the connection.
//
// imapConn always wraps the clear text: the TLS connection under ssl and
// starttls (whose clear-text part runs before it, see startTLS).
//
// imapConn is safe for the concurrent use imapclient makes of it (a reader
// goroutine and command writers).
type imapConn struct {
	net.Conn

	mu        sync.Mutex
	limit     time.Time // zero = no cap
	read      time.Time // the read deadline imapclient asked for
	write     time.Time // the write deadline imapclient asked for
	first     []byte    // the first line so far
	firstDone bool      // first holds the whole line (or maxGreetingLen bytes)
	firstAt   time.Time // when the first line was complete

	pending []byte // read before the connection (a greeting after STARTTLS)
	resp    respLimit
	tooLong error // resp's error, for the other goroutines
}

// newIMAPConn wraps c with limit as the cap on deadlines, applied at once.
func newIMAPConn(c net.Conn, limit time.Time) *imapConn {
	ic := &imapConn{Conn: c}
	_ = ic.setLimit(limit)
	return ic
}

func (c *imapConn) Read(p []byte) (int, error) {
	// imapclient has one reader goroutine: resp and pending need no lock.
	if c.resp.err != nil {
		return 0, c.resp.err
	}
	var (
		n   int
		err error
	)
	if len(c.pending) > 0 {
		n = copy(p, c.pending)
		c.pending = c.pending[n:]
	} else {
		n, err = c.Conn.Read(p)
	}
	if n > 0 {
		if lerr := c.resp.scan(p[:n]); lerr != nil {
			c.mu.Lock()
			c.tooLong = lerr
			c.mu.Unlock()
			_ = c.Conn.Close()
			return 0, lerr
		}
		c.mu.Lock()
		if !c.firstDone {
			chunk := p[:n]
			if i := bytes.IndexByte(chunk, '\n'); i >= 0 {
				chunk = chunk[:i+1]
				c.firstDone = true
			}
			room := maxGreetingLen - len(c.first)
			if len(chunk) >= room {
				chunk = chunk[:room]
				c.firstDone = true
			}
			c.first = append(c.first, chunk...)
			if c.firstDone {
				c.firstAt = time.Now()
			}
		}
		c.mu.Unlock()
	}
	return n, err
}

// cause returns the error that ended the connection when a response was
// too long (imapclient reports it as text only), else err.
func (c *imapConn) cause(err error) error {
	if c == nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tooLong != nil {
		return c.tooLong
	}
	return err
}

// greeting returns the server's first line without its line break,
// whether it is complete, and when it was complete.
func (c *imapConn) greeting() (line string, complete bool, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(bytes.TrimRight(c.first, "\r\n")), c.firstDone, c.firstAt
}

func (c *imapConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.read, c.write = t, t
	return c.apply()
}

func (c *imapConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.read = t
	return c.Conn.SetReadDeadline(earlier(t, c.limit))
}

func (c *imapConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.write = t
	return c.Conn.SetWriteDeadline(earlier(t, c.limit))
}

// setLimit caps every deadline at t (zero removes the cap) and applies the
// result at once.
func (c *imapConn) setLimit(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.limit = t
	return c.apply()
}

// apply sets the underlying deadlines; c.mu is held.
func (c *imapConn) apply() error {
	err := c.Conn.SetReadDeadline(earlier(c.read, c.limit))
	if werr := c.Conn.SetWriteDeadline(earlier(c.write, c.limit)); err == nil {
		err = werr
	}
	return err
}

// earlier returns the earlier of two deadlines, zero meaning none.
func earlier(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case b.Before(a):
		return b
	}
	return a
}

// respLimit follows the responses a server sends, just enough to bound
// each one (maxResponseBytes) without buffering it: it counts the bytes of
// the current response, and skips the literals a FETCH streams as a
// message body. A literal is announced by "{n}" at the end of a line;
// that of a body section in a FETCH response ("* 12 FETCH (… BODY[] {n}")
// is skipped uncounted, any other one counts its announced size at once,
// so that a huge announcement fails before a byte of it is read.
type respLimit struct {
	size  int64    // bytes of the current response (non-body literals included)
	lit   int64    // literal bytes still to pass
	depth int      // parentheses open, outside quoted strings
	quote byte     // 0 outside a quoted string, '"' inside, '\\' after a backslash inside
	head  []byte   // the response's first bytes, up to respHead
	tail  [64]byte // ring of the current line's last bytes
	tails int      // bytes written to tail since the line began
	err   error
}

const respHead = 32

func (r *respLimit) scan(p []byte) error {
	for i := 0; i < len(p); {
		if r.lit > 0 {
			k := int(min(r.lit, int64(len(p)-i)))
			r.lit -= int64(k)
			i += k
			continue
		}
		b := p[i]
		i++
		r.size++
		if r.size > maxResponseBytes && r.over(0) {
			return r.fail()
		}
		if len(r.head) < respHead {
			r.head = append(r.head, b)
		}
		r.tail[r.tails%len(r.tail)] = b
		r.tails++
		switch {
		case r.quote == '\\':
			r.quote = '"'
		case r.quote == '"':
			if b == '\\' {
				r.quote = '\\'
			} else if b == '"' {
				r.quote = 0
			}
		case b == '"':
			r.quote = '"'
		case b == '(':
			if r.depth++; r.depth > maxNesting {
				r.err = fmt.Errorf("%w (parentheses nested over %d deep)", ErrResponseTooLong, maxNesting)
				return r.err
			}
		case b == ')':
			r.depth = max(r.depth-1, 0)
		}
		if b != '\n' {
			continue
		}
		r.quote = 0 // a quoted string never spans lines
		size, body, ok := r.literal()
		r.tails = 0
		if !ok {
			// The response ends here.
			r.size, r.head, r.depth = 0, r.head[:0], 0
			continue
		}
		if !body {
			if r.over(size) {
				return r.fail()
			}
			r.size += size
		}
		r.lit = size
	}
	return nil
}

// over reports whether the current response plus more bytes passes its
// bound.
func (r *respLimit) over(more int64) bool {
	limit := int64(maxResponseBytes)
	if r.isSearch() {
		limit = maxSearchBytes
	}
	return more > limit-r.size
}

func (r *respLimit) fail() error {
	r.err = fmt.Errorf("%w (%d MiB, %d MiB for a SEARCH, not counting message bodies)", ErrResponseTooLong, maxResponseBytes>>20, maxSearchBytes>>20)
	return r.err
}

// isSearch reports whether the current response is SEARCH, ESEARCH or
// SORT.
func (r *respLimit) isSearch() bool {
	for _, p := range []string{"* SEARCH", "* ESEARCH", "* SORT"} {
		if len(r.head) >= len(p) && bytes.EqualFold(r.head[:len(p)], []byte(p)) {
			return true
		}
	}
	return false
}

// line returns the current line's last bytes (at most len(tail)).
func (r *respLimit) line() []byte {
	n := min(r.tails, len(r.tail))
	out := make([]byte, 0, n)
	for k := r.tails - n; k < r.tails; k++ {
		out = append(out, r.tail[k%len(r.tail)])
	}
	return out
}

// literal reports whether the line just ended announces a literal, its
// size, and whether it is a message body a FETCH streams.
func (r *respLimit) literal() (size int64, body, ok bool) {
	l := bytes.TrimSuffix(bytes.TrimSuffix(r.line(), []byte("\n")), []byte("\r"))
	if !bytes.HasSuffix(l, []byte("}")) {
		return 0, false, false
	}
	open := bytes.LastIndexByte(l, '{')
	if open < 0 {
		return 0, false, false
	}
	digits := l[open+1 : len(l)-1]
	if len(digits) == 0 {
		return 0, false, false
	}
	for _, d := range digits {
		if d < '0' || d > '9' {
			return 0, false, false
		}
	}
	size, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil {
		size = 1 << 62 // more than any bound
	}
	before := bytes.TrimSuffix(l[:open], []byte("~")) // literal8 (RFC 3516)
	return size, r.isFetch() && isBodyItem(before), true
}

// isFetch reports whether the current response is "* <n> FETCH".
func (r *respLimit) isFetch() bool {
	h := r.head
	if !bytes.HasPrefix(h, []byte("* ")) {
		return false
	}
	h = h[2:]
	i := 0
	for i < len(h) && h[i] >= '0' && h[i] <= '9' {
		i++
	}
	return i > 0 && len(h) >= i+7 && bytes.EqualFold(h[i:i+7], []byte(" FETCH "))
}

// isBodyItem reports whether text ends with the name of a FETCH item whose
// value go-imap streams, and a space: "BODY[…] ", "BODY[…]<n> ",
// "BINARY[…] ", "RFC822 ", "RFC822.HEADER ", "RFC822.TEXT ".
func isBodyItem(text []byte) bool {
	t, ok := bytes.CutSuffix(text, []byte(" "))
	if !ok {
		return false
	}
	if len(t) > 0 && t[len(t)-1] == '>' {
		// An origin: "BODY[]<0>".
		i := bytes.LastIndexByte(t, '<')
		if i < 0 {
			return false
		}
		t = t[:i]
	}
	if len(t) > 0 && t[len(t)-1] == ']' {
		return true
	}
	upper := bytes.ToUpper(t)
	for _, name := range []string{"RFC822", "RFC822.HEADER", "RFC822.TEXT"} {
		if bytes.HasSuffix(upper, []byte(" "+name)) || bytes.HasSuffix(upper, []byte("("+name)) {
			return true
		}
	}
	return false
}
