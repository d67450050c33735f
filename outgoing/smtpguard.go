package outgoing

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
)

// Guards against a hostile SMTP server (docs/security.md, "Hostile
// servers"). go-mail reads replies with net/textproto, which has no bound:
// a reply line that never ends, or a multi-line reply that never does, is
// kept in memory for as long as the server sends it (and joined
// quadratically, line by line). A line cut off by a lost connection is
// returned as if it were whole, so "250 2.0.0 Queu" and a reset would
// count as delivered. And after "220 Ready to start TLS" go-mail drops
// whatever the server pipelined before the handshake without a word.

// maxReplyBytes bounds what the server may send between two writes of
// ours: one reply, with the TLS records that carry it (a handshake's
// certificates included). Real replies are a few hundred bytes, an EHLO
// reply a few lines.
const maxReplyBytes = 64 << 10

// Causes of a StepError when the server broke the protocol (test with
// errors.Is).
var (
	// ErrReplyTooLong: the server sent more than maxReplyBytes without
	// waiting for a command; the connection was closed.
	ErrReplyTooLong = errors.New("the server sent a reply larger than mailsync accepts")
	// ErrReplyCutOff: the connection ended in the middle of a reply line.
	ErrReplyCutOff = errors.New("the server's reply was cut off in the middle of a line")
	// ErrSTARTTLSInjection: the server sent more after its 220 reply to
	// STARTTLS, before the TLS handshake (RFC 3207 forbids it; it is how a
	// man in the middle injects replies, the STARTTLS class of
	// CVE-2011-0411). Nothing of it was read as a reply; the connection
	// was closed.
	ErrSTARTTLSInjection = errors.New("the server sent data after its STARTTLS reply, before the TLS handshake (a possible response injection); refused")
)

// replyConn is the TCP connection as TLS and go-mail see it: it bounds the
// bytes read between two writes (maxReplyBytes) and counts read errors, so
// that a reply read whole can be told from one cut off by an error.
// It is used by one goroutine at a time, like Conn.
type replyConn struct {
	net.Conn
	n       int   // bytes read since the last write
	errs    int   // read errors so far
	lastErr error // the latest read error
	err     error // the bound's error, once it was passed
}

func (c *replyConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(p)
	if err != nil {
		c.errs++
		c.lastErr = err
	}
	if c.n += n; c.n > maxReplyBytes {
		c.err = fmt.Errorf("%w (%d KiB without waiting for a command)", ErrReplyTooLong, maxReplyBytes>>10)
		c.errs++
		_ = c.Conn.Close()
		return 0, c.err
	}
	return n, err
}

func (c *replyConn) Write(p []byte) (int, error) {
	c.n = 0
	return c.Conn.Write(p)
}

// readReply reads one reply with text.ReadResponse. A reply whose last
// line came from a read that failed (bufio hands over a partial line
// without its error) is ErrReplyCutOff, not a reply.
func (c *Conn) readReply(text *textproto.Conn, expect int) (int, string, error) {
	errs := c.lim.errors()
	code, msg, err := text.ReadResponse(expect)
	if c.lim.errors() != errs && (err == nil || replyOf(err) != nil) {
		// The read error says why (a timeout, a reset).
		return 0, "", fmt.Errorf("%w (%w)", ErrReplyCutOff, c.lim.lastErr)
	}
	return code, msg, err
}

// errors returns the read errors so far; 0 for a nil replyConn.
func (c *replyConn) errors() int {
	if c == nil {
		return 0
	}
	return c.errs
}

// startTLSConfig returns cfg for the STARTTLS handshake on client, refusing
// it (ErrSTARTTLSInjection) when the server sent anything after its 220
// reply: those bytes sit in the clear-text reader that STARTTLS discards.
// The check runs once the certificate is verified, before the client
// sends anything under TLS.
func startTLSConfig(cfg *tls.Config, clear *textproto.Conn) *tls.Config {
	cfg = cfg.Clone()
	cfg.VerifyConnection = func(tls.ConnectionState) error {
		if clear.R.Buffered() > 0 {
			return ErrSTARTTLSInjection
		}
		return nil
	}
	return cfg
}

// cleanText makes a server's text storable and displayable: valid UTF-8,
// without NUL (PostgreSQL refuses both in text columns).
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	return s
}
