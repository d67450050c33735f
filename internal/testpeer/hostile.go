package testpeer

// The hostile peer: a raw TCP server on 127.0.0.1 that runs a script per
// connection, for the suites that check how mailsync copes with servers
// that lie, stall, flood or break the protocol (docs/security.md, "Hostile
// servers"). Unlike StartSMTP and StartIMAP it has no protocol of its own:
// a script reads the client's lines and writes whatever bytes it likes,
// and may switch the connection to TLS at any point (STARTTLS), with bytes
// pipelined before the handshake if it wants to.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// HostileOptions configures StartHostile.
type HostileOptions struct {
	// TLS is the server configuration for Implicit and for the STARTTLS
	// upgrades a script makes (HostileConn.StartTLS); typically
	// (*CA).ServerTLS.
	TLS *tls.Config
	// Implicit speaks TLS from the first byte.
	Implicit bool
}

// HostileScript is what the peer does on one connection. It returns when
// it is done with the connection, which is then closed; its error is
// recorded (Errors) but fails nothing: clients hang up in the middle of a
// script all the time in these tests.
type HostileScript func(c *HostileConn) error

// HostileLine is one line (or chunk) the client sent, as the script read it.
type HostileLine struct {
	Conn int    // HostileConn.ID
	TLS  bool   // whether it came under TLS
	Text string // without the line break
}

// HostilePeer is a scripted TCP server on 127.0.0.1. Its methods are safe
// for concurrent use.
type HostilePeer struct {
	ln     net.Listener
	opts   HostileOptions
	script HostileScript
	done   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once

	mu       sync.Mutex
	conns    map[*HostileConn]bool
	accepted int
	lines    []HostileLine
	errs     []error
}

// hostileLineLimit bounds one line a script reads from the client.
const hostileLineLimit = 1 << 20

// StartHostile starts a peer that runs script on every accepted connection;
// opts may be nil (clear text). The peer stops at the end of the test.
func StartHostile(t testing.TB, opts *HostileOptions, script HostileScript) *HostilePeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("hostile peer: listen: %v", err)
	}
	p := &HostilePeer{ln: ln, script: script, done: make(chan struct{}), conns: map[*HostileConn]bool{}}
	if opts != nil {
		p.opts = *opts
	}
	if p.opts.Implicit && p.opts.TLS == nil {
		t.Fatalf("hostile peer: Implicit needs TLS")
	}
	p.wg.Go(p.accept)
	t.Cleanup(p.Close)
	return p
}

// Host is the address to dial, 127.0.0.1.
func (p *HostilePeer) Host() string { return "127.0.0.1" }

// Port is the port the peer listens on.
func (p *HostilePeer) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Addr is host:port.
func (p *HostilePeer) Addr() string { return p.ln.Addr().String() }

// Accepted is the number of connections accepted so far.
func (p *HostilePeer) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Lines returns what the clients sent so far, as the scripts read it.
func (p *HostilePeer) Lines() []HostileLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]HostileLine(nil), p.lines...)
}

// ClearText returns what the clients sent before TLS, one line each, as
// the scripts read it.
func (p *HostilePeer) ClearText() string {
	var b strings.Builder
	for _, l := range p.Lines() {
		if !l.TLS {
			b.WriteString(l.Text)
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Errors returns the errors the scripts returned.
func (p *HostilePeer) Errors() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]error(nil), p.errs...)
}

// Close stops the listener, closes every connection and waits for the
// scripts to return. It is idempotent.
func (p *HostilePeer) Close() {
	p.once.Do(func() {
		close(p.done)
		_ = p.ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			_ = c.raw.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
}

func (p *HostilePeer) accept() {
	for {
		raw, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		select {
		case <-p.done:
			p.mu.Unlock()
			_ = raw.Close()
			return
		default:
		}
		p.accepted++
		c := &HostileConn{ID: p.accepted, p: p, raw: raw, conn: raw}
		p.conns[c] = true
		p.mu.Unlock()
		p.wg.Go(func() { p.serve(c) })
	}
}

func (p *HostilePeer) serve(c *HostileConn) {
	defer func() {
		_ = c.conn.Close()
		_ = c.raw.Close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	if p.opts.Implicit {
		tc := tls.Server(c.raw, p.opts.TLS)
		if err := tc.Handshake(); err != nil {
			p.note(fmt.Errorf("conn %d: implicit TLS handshake: %w", c.ID, err))
			return
		}
		c.conn, c.tls = tc, true
	}
	c.r = bufio.NewReaderSize(c.conn, 4096)
	if err := p.script(c); err != nil {
		p.note(fmt.Errorf("conn %d: %w", c.ID, err))
	}
}

func (p *HostilePeer) note(err error) {
	p.mu.Lock()
	p.errs = append(p.errs, err)
	p.mu.Unlock()
}

func (p *HostilePeer) record(c *HostileConn, text string) {
	p.mu.Lock()
	p.lines = append(p.lines, HostileLine{Conn: c.ID, TLS: c.tls, Text: text})
	p.mu.Unlock()
}

// ErrHostileClosing is returned by the HostileConn methods once the peer
// is closing.
var ErrHostileClosing = errors.New("hostile peer: closing")

// HostileConn is one accepted connection, as a script sees it. It is used
// by its script's goroutine only.
type HostileConn struct {
	ID int // 1-based, in accept order

	p    *HostilePeer
	raw  net.Conn // the TCP connection
	conn net.Conn // raw, or TLS over it
	r    *bufio.Reader
	tls  bool
}

// TLS reports whether the connection is under TLS.
func (c *HostileConn) TLS() bool { return c.tls }

func (c *HostileConn) closing() bool {
	select {
	case <-c.p.done:
		return true
	default:
		return false
	}
}

// ReadLine reads one line from the client and returns it without its line
// break. Lines are bounded (1 MiB).
func (c *HostileConn) ReadLine() (string, error) {
	var line []byte
	for {
		chunk, isPrefix, err := c.r.ReadLine()
		line = append(line, chunk...)
		if err != nil {
			if len(line) > 0 {
				c.p.record(c, string(line))
			}
			return string(line), err
		}
		if len(line) > hostileLineLimit {
			return "", fmt.Errorf("client line longer than %d bytes", hostileLineLimit)
		}
		if !isPrefix {
			break
		}
	}
	c.p.record(c, string(line))
	return string(line), nil
}

// ReadFull reads exactly n bytes (a literal the client sends).
func (c *HostileConn) ReadFull(n int) ([]byte, error) {
	if n > hostileLineLimit {
		return nil, fmt.Errorf("client literal of %d bytes is too long", n)
	}
	b := make([]byte, n)
	_, err := io.ReadFull(c.r, b)
	c.p.record(c, string(b))
	return b, err
}

// Write sends s as it is.
func (c *HostileConn) Write(s string) error {
	if c.closing() {
		return ErrHostileClosing
	}
	_, err := io.WriteString(c.conn, s)
	return err
}

// Writef sends a formatted string.
func (c *HostileConn) Writef(format string, args ...any) error {
	return c.Write(fmt.Sprintf(format, args...))
}

// WriteSlowly sends s one byte every gap (slowloris), until it is all sent,
// the client hangs up or the peer closes.
func (c *HostileConn) WriteSlowly(s string, gap time.Duration) error {
	for i := 0; i < len(s); i++ {
		if _, err := c.conn.Write([]byte{s[i]}); err != nil {
			return err
		}
		if !c.Pause(gap) {
			return ErrHostileClosing
		}
	}
	return nil
}

// Flood sends pattern again and again until limit bytes are sent (0: no
// limit), the client stops reading and hangs up, or the peer closes. It
// returns how many bytes went out.
func (c *HostileConn) Flood(pattern string, limit int64) (int64, error) {
	if pattern == "" {
		return 0, errors.New("hostile peer: empty flood pattern")
	}
	chunk := bytes.Repeat([]byte(pattern), max(1, (64<<10)/len(pattern)))
	var sent int64
	for limit <= 0 || sent < limit {
		b := chunk
		if limit > 0 && int64(len(b)) > limit-sent {
			b = b[:limit-sent]
		}
		n, err := c.conn.Write(b)
		sent += int64(n)
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// Pause waits d, or less when the peer closes; it reports whether the peer
// is still open. (This is the behaviour under test — a slow server — not a
// way to synchronise with the client.)
func (c *HostileConn) Pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.p.done:
		return false
	case <-t.C:
		return true
	}
}

// ReadChunk reads what the client sent next, as it comes (at most 4 KiB):
// a TLS ClientHello, say, that a script waits for before it answers in
// clear text.
func (c *HostileConn) ReadChunk() ([]byte, error) {
	buf := make([]byte, 4096)
	n, err := c.r.Read(buf)
	if n > 0 {
		c.p.record(c, string(buf[:n]))
	}
	return buf[:n], err
}

// Hold answers nothing any more: it reads (and records) what the client
// sends until the client hangs up or the peer closes. A client that does
// not hang up is held for ever, like behind a half-open connection.
func (c *HostileConn) Hold() error {
	buf := make([]byte, 4096)
	for {
		n, err := c.r.Read(buf)
		if n > 0 {
			c.p.record(c, string(buf[:n]))
		}
		if err != nil {
			if errors.Is(err, io.EOF) || c.closing() {
				return nil
			}
			return err
		}
	}
}

// StartTLS runs the server side of a TLS handshake on the connection, as
// after a STARTTLS reply; what the script wrote before (including bytes
// pipelined after the reply) has already left in clear text. Client bytes
// already read ahead are fed to the handshake.
func (c *HostileConn) StartTLS() error {
	if c.p.opts.TLS == nil {
		return errors.New("hostile peer: StartTLS without HostileOptions.TLS")
	}
	if c.tls {
		return errors.New("hostile peer: already under TLS")
	}
	under := net.Conn(c.raw)
	if n := c.r.Buffered(); n > 0 {
		ahead, _ := c.r.Peek(n)
		under = &prefixConn{Conn: c.raw, r: io.MultiReader(bytes.NewReader(bytes.Clone(ahead)), c.raw)}
	}
	tc := tls.Server(under, c.p.opts.TLS)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("STARTTLS handshake: %w", err)
	}
	c.conn, c.tls = tc, true
	c.r = bufio.NewReaderSize(tc, 4096)
	return nil
}

// Close closes the connection (the script may go on writing into the
// void; every call then fails).
func (c *HostileConn) Close() error { return c.conn.Close() }

// CloseWrite half-closes the connection: the client reads EOF, the script
// can still read.
func (c *HostileConn) CloseWrite() error {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := c.conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.New("hostile peer: connection cannot half-close")
}

// prefixConn reads r (bytes read ahead, then the connection) and writes to
// the connection.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }
