package testpeer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SMTPMode selects how the SMTP peer uses TLS.
type SMTPMode int

const (
	// SMTPPlain never offers TLS. AUTH, when there are users, is offered in
	// clear text, as a misconfigured server would.
	SMTPPlain SMTPMode = iota
	// SMTPStartTLS greets in clear text and offers STARTTLS (RFC 3207).
	SMTPStartTLS
	// SMTPImplicitTLS speaks TLS from the first byte (RFC 8314, port 465).
	SMTPImplicitTLS
)

func (m SMTPMode) String() string {
	switch m {
	case SMTPPlain:
		return "plain"
	case SMTPStartTLS:
		return "starttls"
	case SMTPImplicitTLS:
		return "implicit-tls"
	}
	return "SMTPMode(" + strconv.Itoa(int(m)) + ")"
}

// SMTPStage names a point in an SMTP session at which SMTPScript.StallAt
// makes the peer stop answering.
type SMTPStage string

const (
	// SMTPStageGreeting holds the accepted TCP connection without reading
	// or writing a byte: no 220 greeting, no TLS handshake.
	SMTPStageGreeting SMTPStage = "greeting"
	// SMTPStageEHLO leaves the first EHLO/HELO of a session unanswered.
	SMTPStageEHLO SMTPStage = "ehlo"
	// SMTPStageAuth leaves AUTH unanswered once the credentials arrived.
	SMTPStageAuth SMTPStage = "auth"
	// SMTPStageMail leaves MAIL FROM unanswered.
	SMTPStageMail SMTPStage = "mail"
	// SMTPStageRcpt leaves RCPT TO unanswered.
	SMTPStageRcpt SMTPStage = "rcpt"
	// SMTPStageData reads the whole message, then sends no final reply.
	SMTPStageData SMTPStage = "data"
)

// SMTPOptions configures StartSMTP. A nil *SMTPOptions is a plain-text server
// without AUTH that accepts every message.
type SMTPOptions struct {
	Mode SMTPMode
	// TLS is the server configuration for SMTPStartTLS and SMTPImplicitTLS,
	// typically (*CA).ServerTLS. It is ignored in SMTPPlain mode.
	TLS *tls.Config
	// Users maps login to password. When it is non-empty AUTH is offered
	// and MAIL FROM is refused with 530 until the client authenticated, as
	// a submission server does. SetPassword changes it during a test.
	Users map[string]string
	// AuthMechs lists the SASL mechanisms offered, from "PLAIN" and "LOGIN";
	// nil means both.
	AuthMechs []string
	// AllowInsecureAuth offers AUTH before STARTTLS too, so that a test can
	// check that the client does not use it. SMTPPlain always offers AUTH
	// in clear text when there are users.
	AllowInsecureAuth bool
	// Domain is the name in the greeting; "localhost" when empty.
	Domain string
	// MaxMessageBytes is advertised as SIZE and enforced (552); 0 means no
	// limit.
	MaxMessageBytes int64
	// Script decides the replies; nil accepts everything.
	Script *SMTPScript
}

// SMTPScript makes the peer misbehave on purpose. Every hook is optional.
// A hook returns nil to carry on or an error to reply with, typically
// SMTPReply(535, "5.7.8", "..."); an error that is not an *smtp.SMTPError is
// sent as a 4xx or 5xx reply chosen by go-smtp. n counts the calls of that
// hook across the whole server, from 1, so "451 then accept" is
// `if n == 1 { return SMTPReply(451, "4.3.0", "try again") }`.
// Hooks run on the connection's goroutine and may be called concurrently
// for different connections.
type SMTPScript struct {
	// Auth runs when a client presented credentials, before they are checked
	// against Users; returning nil lets the check decide.
	Auth func(n int, login, password string) error
	// Mail runs for MAIL FROM (after the 530 check for unauthenticated
	// clients).
	Mail func(n int, from string) error
	// Rcpt runs for each RCPT TO.
	Rcpt func(n int, to string) error
	// Data runs once the whole message was read; returning nil records it.
	Data func(n int, msg []byte) error
	// DropAfterData, when it returns true, closes the TCP connection once
	// the message was read, without any reply and without recording it. It
	// shares n with Data and runs before it.
	DropAfterData func(n int) bool
	// StallAt makes the server stop answering at that stage, on every
	// connection, until Release or Close. Empty means never.
	StallAt SMTPStage
}

// SMTPReply builds the reply a script hook returns, e.g.
// SMTPReply(553, "5.7.1", "Sender address rejected"). enhanced may be empty
// for a generic enhanced code; a malformed one panics.
func SMTPReply(code int, enhanced, text string) *smtp.SMTPError {
	ec := smtp.EnhancedCodeNotSet
	if enhanced != "" {
		parts := strings.Split(enhanced, ".")
		if len(parts) != 3 {
			panic(fmt.Sprintf("testpeer: malformed enhanced status code %q", enhanced))
		}
		for i, p := range parts {
			v, err := strconv.Atoi(p)
			if err != nil {
				panic(fmt.Sprintf("testpeer: malformed enhanced status code %q", enhanced))
			}
			ec[i] = v
		}
	}
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: text}
}

// SMTPMessage is one message the peer accepted with a 250 reply.
type SMTPMessage struct {
	ConnID   int // SMTPSession.ID of the connection that carried it
	From     string
	To       []string
	Data     []byte // as received, dot-unstuffed, CRLF line endings
	TLS      bool   // whether the session was under TLS
	AuthUser string // login that authenticated the session, "" if none
}

// SMTPAuth is one AUTH exchange that got as far as credentials.
type SMTPAuth struct {
	Mechanism string
	Login     string
	TLS       bool // whether TLS was active when the credentials came
	OK        bool // whether the reply was 235
}

// SMTPSession describes one accepted TCP connection.
type SMTPSession struct {
	ID         int // 1-based, in accept order
	TLS        bool
	TLSVersion uint16 // tls.VersionTLS12, …; 0 without TLS
	ServerName string // SNI the client sent, "" without TLS or SNI
	Hello      string // argument of the latest EHLO/HELO
	Auths      []SMTPAuth
	// Transcript holds the bytes the client sent, as read from the TCP
	// socket: clear text up to STARTTLS, TLS records after it. Only the
	// first 1 MiB is kept.
	Transcript []byte
	Closed     bool // whether the server side closed the connection
}

// transcriptLimit bounds SMTPSession.Transcript per connection.
const transcriptLimit = 1 << 20

// SMTPServer is a scriptable in-process SMTP server on 127.0.0.1. All
// methods are safe for concurrent use.
type SMTPServer struct {
	t      testing.TB
	opts   SMTPOptions
	script SMTPScript
	srv    *smtp.Server
	ln     net.Listener // the TCP listener

	serveDone chan struct{}
	closing   chan struct{}
	released  chan struct{}
	stalled   chan struct{}

	closeOnce   sync.Once
	releaseOnce sync.Once
	stallOnce   sync.Once

	authN, mailN, rcptN, dataN atomic.Int64

	mu       sync.Mutex
	users    map[string]string
	conns    []*smtpConn
	msgs     []SMTPMessage
	msgAdded chan struct{} // closed and replaced whenever msgs grows
}

// StartSMTP starts an SMTP server on 127.0.0.1 with a kernel-chosen port.
// t.Cleanup closes it.
func StartSMTP(t testing.TB, opts *SMTPOptions) *SMTPServer {
	t.Helper()
	s := &SMTPServer{
		t:         t,
		serveDone: make(chan struct{}),
		closing:   make(chan struct{}),
		released:  make(chan struct{}),
		stalled:   make(chan struct{}),
		users:     map[string]string{},
		msgAdded:  make(chan struct{}),
	}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.Script != nil {
		s.script = *s.opts.Script
	}
	switch s.script.StallAt {
	case "", SMTPStageGreeting, SMTPStageEHLO, SMTPStageAuth, SMTPStageMail, SMTPStageRcpt, SMTPStageData:
	default:
		t.Fatalf("StartSMTP: unknown StallAt stage %q", s.script.StallAt)
	}
	if s.opts.AuthMechs == nil {
		s.opts.AuthMechs = []string{sasl.Plain, sasl.Login}
	}
	s.opts.AuthMechs = slices.Clone(s.opts.AuthMechs)
	for i, m := range s.opts.AuthMechs {
		m = strings.ToUpper(m)
		if m != sasl.Plain && m != sasl.Login {
			t.Fatalf("StartSMTP: unsupported AUTH mechanism %q (want PLAIN or LOGIN)", m)
		}
		s.opts.AuthMechs[i] = m
	}
	for login, password := range s.opts.Users {
		s.users[login] = password
	}
	if s.opts.Domain == "" {
		s.opts.Domain = "localhost"
	}

	srv := smtp.NewServer(smtpBackend{s})
	srv.Domain = s.opts.Domain
	srv.MaxMessageBytes = s.opts.MaxMessageBytes
	srv.AllowInsecureAuth = s.opts.AllowInsecureAuth || s.opts.Mode == SMTPPlain
	srv.ErrorLog = smtpLogger{s}
	switch s.opts.Mode {
	case SMTPPlain:
	case SMTPStartTLS, SMTPImplicitTLS:
		if s.opts.TLS == nil {
			t.Fatalf("StartSMTP: mode %v needs SMTPOptions.TLS", s.opts.Mode)
		}
		srv.TLSConfig = s.opts.TLS.Clone()
	default:
		t.Fatalf("StartSMTP: unknown mode %v", s.opts.Mode)
	}
	s.srv = srv

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("StartSMTP: listen: %v", err)
	}
	s.ln = ln
	var l net.Listener = &smtpListener{Listener: ln, s: s}
	if s.opts.Mode == SMTPImplicitTLS {
		l = tls.NewListener(l, srv.TLSConfig)
	}
	go func() {
		defer close(s.serveDone)
		_ = srv.Serve(l) // returns once Close closes the listener
	}()
	t.Cleanup(s.Close)
	return s
}

// Addr returns "127.0.0.1:port".
func (s *SMTPServer) Addr() string { return s.ln.Addr().String() }

// Host returns "127.0.0.1".
func (s *SMTPServer) Host() string { return "127.0.0.1" }

// Port returns the listening port.
func (s *SMTPServer) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Conns returns how many TCP connections were accepted so far.
func (s *SMTPServer) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Sessions returns a copy of what was recorded for each accepted connection,
// in accept order.
func (s *SMTPServer) Sessions() []SMTPSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]SMTPSession, len(s.conns))
	for i, c := range s.conns {
		out[i] = c.info
		out[i].Auths = slices.Clone(c.info.Auths)
		out[i].Transcript = slices.Clone(c.info.Transcript)
	}
	return out
}

// Messages returns a copy of the accepted messages, in order of acceptance.
func (s *SMTPServer) Messages() []SMTPMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.copyMessagesLocked()
}

// WaitMessages blocks until at least n messages were accepted, then returns
// them all; it fails when ctx ends first.
func (s *SMTPServer) WaitMessages(ctx context.Context, n int) ([]SMTPMessage, error) {
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			out := s.copyMessagesLocked()
			s.mu.Unlock()
			return out, nil
		}
		have, added := len(s.msgs), s.msgAdded
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %d SMTP messages, have %d: %w", n, have, ctx.Err())
		case <-added:
		}
	}
}

func (s *SMTPServer) copyMessagesLocked() []SMTPMessage {
	out := make([]SMTPMessage, len(s.msgs))
	for i, m := range s.msgs {
		out[i] = m
		out[i].To = slices.Clone(m.To)
		out[i].Data = slices.Clone(m.Data)
	}
	return out
}

// SetPassword adds a user or changes its password, as when a mailbox's
// password is changed on the server. It affects later AUTH commands only.
func (s *SMTPServer) SetPassword(login, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[login] = password
}

// Stalled returns a channel closed once a connection first reached the
// SMTPScript.StallAt stage.
func (s *SMTPServer) Stalled() <-chan struct{} { return s.stalled }

// Release ends SMTPScript.StallAt for good: stalled connections carry on and
// later ones do not stall.
func (s *SMTPServer) Release() {
	s.releaseOnce.Do(func() { close(s.released) })
}

// Close stops the server: it releases stalls, closes the listener and every
// connection, and waits for all of the server's goroutines. It is idempotent
// and runs from t.Cleanup as well.
func (s *SMTPServer) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.Release()
		_ = s.ln.Close()
		<-s.serveDone // no connection is accepted after this
		s.mu.Lock()
		conns := slices.Clone(s.conns)
		s.mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
		// Every connection is closed, so this only waits for go-smtp's
		// goroutines to notice; the bound turns a bug into a failure
		// rather than a hung test binary.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Shutdown also closes the listener again; only its wait matters.
		if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
			s.t.Errorf("SMTP peer %s: shutdown: %v", s.Addr(), err)
		}
	})
}

// stall blocks while stage is the scripted stall point, until Release or
// Close. It returns an error for the client when the server is closing.
func (s *SMTPServer) stall(stage SMTPStage) error {
	if s.script.StallAt != stage {
		return nil
	}
	s.stallOnce.Do(func() { close(s.stalled) })
	<-s.released
	select {
	case <-s.closing:
		return SMTPReply(421, "4.3.2", "Server shutting down")
	default:
		return nil
	}
}

func (s *SMTPServer) authOffered() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.users) > 0
}

func (s *SMTPServer) addMessage(m SMTPMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.msgAdded)
	s.msgAdded = make(chan struct{})
}

// smtpBackend keeps smtp.Backend out of SMTPServer's method set.
type smtpBackend struct{ s *SMTPServer }

// NewSession implements smtp.Backend. go-smtp calls it at the first EHLO of
// a connection and again after STARTTLS.
func (b smtpBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s := b.s
	raw := c.Conn()
	if tc, ok := raw.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	conn, ok := raw.(*smtpConn)
	if !ok {
		return nil, fmt.Errorf("testpeer: unexpected connection type %T", raw)
	}
	state, isTLS := c.TLSConnectionState()
	conn.noteTLS(state, isTLS)
	sess := &scriptSession{s: s, conn: conn, c: c, tls: isTLS}
	s.mu.Lock()
	conn.info.Hello = c.Hostname()
	s.mu.Unlock()
	if err := s.stall(SMTPStageEHLO); err != nil {
		return nil, err
	}
	return sess, nil
}

// smtpListener registers and wraps every accepted TCP connection.
type smtpListener struct {
	net.Listener
	s *SMTPServer
}

func (l *smtpListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &smtpConn{Conn: nc, s: l.s}
	if l.s.script.StallAt == SMTPStageGreeting {
		c.gate = l.s.released
	}
	l.s.mu.Lock()
	l.s.conns = append(l.s.conns, c)
	c.id = len(l.s.conns)
	c.info.ID = c.id
	l.s.mu.Unlock()
	return c, nil
}

// smtpConn is one TCP connection; it records what the client sends.
type smtpConn struct {
	net.Conn
	s  *SMTPServer
	id int // SMTPSession.ID
	// gate, when not nil, blocks every read and write until it is closed
	// (SMTPStageGreeting).
	gate      <-chan struct{}
	closeOnce sync.Once
	info      SMTPSession // guarded by s.mu
}

func (c *smtpConn) wait() {
	if c.gate == nil {
		return
	}
	select {
	case <-c.gate:
	default:
		c.s.stallOnce.Do(func() { close(c.s.stalled) })
		<-c.gate
	}
}

func (c *smtpConn) Read(p []byte) (int, error) {
	c.wait()
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.s.mu.Lock()
		if room := transcriptLimit - len(c.info.Transcript); room > 0 {
			c.info.Transcript = append(c.info.Transcript, p[:min(n, room)]...)
		}
		c.s.mu.Unlock()
	}
	return n, err
}

func (c *smtpConn) Write(p []byte) (int, error) {
	c.wait()
	return c.Conn.Write(p)
}

func (c *smtpConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		c.s.mu.Lock()
		c.info.Closed = true
		c.s.mu.Unlock()
		err = c.Conn.Close()
	})
	return err
}

func (c *smtpConn) noteTLS(state tls.ConnectionState, ok bool) {
	if !ok {
		return
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.info.TLS = true
	c.info.TLSVersion = state.Version
	c.info.ServerName = state.ServerName
}

// scriptSession is go-smtp's per-EHLO session. It lives on the connection's
// goroutine (and, for BDAT, a goroutine go-smtp synchronises with it).
type scriptSession struct {
	s        *SMTPServer
	conn     *smtpConn
	c        *smtp.Conn
	tls      bool
	authUser string
	from     string
	to       []string
}

var _ smtp.AuthSession = (*scriptSession)(nil)

func (ss *scriptSession) AuthMechanisms() []string {
	if !ss.s.authOffered() {
		return nil
	}
	return ss.s.opts.AuthMechs
}

func (ss *scriptSession) Auth(mech string) (sasl.Server, error) {
	if !ss.s.authOffered() || !slices.Contains(ss.s.opts.AuthMechs, mech) {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	check := func(identity, login, password string) error {
		return ss.checkAuth(mech, identity, login, password)
	}
	if mech == sasl.Login {
		return &smtpLoginServer{check: check}, nil
	}
	return &smtpPlainServer{check: check}, nil
}

func (ss *scriptSession) checkAuth(mech, identity, login, password string) error {
	if err := ss.s.stall(SMTPStageAuth); err != nil {
		return err
	}
	n := int(ss.s.authN.Add(1))
	var err error
	if ss.s.script.Auth != nil {
		err = ss.s.script.Auth(n, login, password)
	}
	if err == nil {
		ss.s.mu.Lock()
		want, ok := ss.s.users[login]
		ss.s.mu.Unlock()
		if !ok || want != password || (identity != "" && identity != login) {
			err = smtp.ErrAuthFailed
		}
	}
	ss.s.mu.Lock()
	ss.conn.info.Auths = append(ss.conn.info.Auths, SMTPAuth{Mechanism: mech, Login: login, TLS: ss.tls, OK: err == nil})
	ss.s.mu.Unlock()
	if err == nil {
		ss.authUser = login
	}
	return err
}

func (ss *scriptSession) Mail(from string, _ *smtp.MailOptions) error {
	if err := ss.s.stall(SMTPStageMail); err != nil {
		return err
	}
	if ss.authUser == "" && ss.s.authOffered() {
		return SMTPReply(530, "5.7.0", "Authentication required")
	}
	if h := ss.s.script.Mail; h != nil {
		if err := h(int(ss.s.mailN.Add(1)), from); err != nil {
			return err
		}
	}
	ss.from, ss.to = from, nil
	return nil
}

func (ss *scriptSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := ss.s.stall(SMTPStageRcpt); err != nil {
		return err
	}
	if h := ss.s.script.Rcpt; h != nil {
		if err := h(int(ss.s.rcptN.Add(1)), to); err != nil {
			return err
		}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *scriptSession) Data(r io.Reader) error {
	// go-smtp bounds r by MaxMessageBytes when it is set; without it a test
	// message is whatever the test sends.
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := ss.s.stall(SMTPStageData); err != nil {
		return err
	}
	n := int(ss.s.dataN.Add(1))
	if h := ss.s.script.DropAfterData; h != nil && h(n) {
		_ = ss.conn.Close()
		return errors.New("testpeer: connection dropped after DATA")
	}
	if h := ss.s.script.Data; h != nil {
		if err := h(n, msg); err != nil {
			return err
		}
	}
	ss.s.addMessage(SMTPMessage{
		ConnID:   ss.conn.id,
		From:     ss.from,
		To:       slices.Clone(ss.to),
		Data:     msg,
		TLS:      ss.tls,
		AuthUser: ss.authUser,
	})
	return nil
}

func (ss *scriptSession) Reset() {
	ss.from, ss.to = "", nil
}

// Logout runs when the connection closes and when STARTTLS replaces the
// session; in the latter case the connection is already under TLS.
func (ss *scriptSession) Logout() error {
	ss.conn.noteTLS(ss.c.TLSConnectionState())
	return nil
}

// smtpPlainServer is the server side of SASL PLAIN (RFC 4616).
type smtpPlainServer struct {
	check func(identity, login, password string) error
	asked bool
}

func (p *smtpPlainServer) Next(resp []byte) ([]byte, bool, error) {
	if resp == nil && !p.asked {
		p.asked = true
		return []byte{}, false, nil // no initial response: ask for one
	}
	parts := strings.Split(string(resp), "\x00")
	if len(parts) != 3 {
		return nil, true, SMTPReply(501, "5.5.2", "Malformed PLAIN response")
	}
	return nil, true, p.check(parts[0], parts[1], parts[2])
}

// smtpLoginServer is the server side of the obsolete SASL LOGIN mechanism
// (draft-murchison-sasl-login), with or without an initial response.
type smtpLoginServer struct {
	check func(identity, login, password string) error
	step  int
	login string
}

func (l *smtpLoginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		if resp == nil {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.login, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 1:
		l.login, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check("", l.login, string(resp))
	}
}

// smtpLogger sends go-smtp's internal errors to the test log, except those
// caused by Close cutting connections.
type smtpLogger struct{ s *SMTPServer }

func (l smtpLogger) Printf(format string, v ...any) { l.log(fmt.Sprintf(format, v...)) }
func (l smtpLogger) Println(v ...any)               { l.log(fmt.Sprint(v...)) }

func (l smtpLogger) log(msg string) {
	select {
	case <-l.s.closing:
	default:
		l.s.t.Logf("SMTP peer %s: %s", l.s.Addr(), msg)
	}
}
