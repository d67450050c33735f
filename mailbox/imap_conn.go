package mailbox

import (
	"bytes"
	"net"
	"sync"
	"time"
)

// maxGreetingLen bounds how much of the server's first line imapConn keeps.
const maxGreetingLen = 1024

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
//     report and to tell a failed greeting from a failed STARTTLS. Under
//     STARTTLS the bytes after the first line are TLS records; they are
//     not kept.
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
}

// newIMAPConn wraps c with limit as the cap on deadlines, applied at once.
func newIMAPConn(c net.Conn, limit time.Time) *imapConn {
	ic := &imapConn{Conn: c}
	_ = ic.setLimit(limit)
	return ic
}

func (c *imapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
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
