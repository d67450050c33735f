package submission

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mailsync/mailsync/internal/users"
	"github.com/mailsync/mailsync/outgoing"
)

// Outgoing is what the server needs of the outgoing service.
type Outgoing interface {
	SubmitRaw(ctx context.Context, c outgoing.Caller, envelopeFrom string, rcpts []string, raw io.Reader, opts outgoing.SubmitOptions) (outgoing.OutboxMessage, error)
}

// Users resolves API tokens, and the user trusted loopback clients send as.
type Users interface {
	Authenticate(ctx context.Context, token string) (users.User, error)
	ByEmail(ctx context.Context, email string) (users.User, error)
}

// Options configure a Server. A nil *Options is plain SMTP with AUTH from
// loopback only and the default limits.
type Options struct {
	// Domain is the name in the greeting and EHLO reply; the host name when
	// empty.
	Domain string
	// TLS, when set, offers STARTTLS on Serve's listeners and is what
	// ServeTLS speaks from the first byte. TLSFromFiles builds one.
	TLS *tls.Config
	// TrustLoopback lets clients on a loopback address send without AUTH,
	// as LoopbackUser. Meant for a site on the same host as mailsync: any
	// local process may then send as any sender that user may use.
	TrustLoopback bool
	// LoopbackUser is the address of the user that trusted loopback clients
	// send as (MAILSYNC_ADMIN_EMAIL in the service). Required with
	// TrustLoopback.
	LoopbackUser string
	// MaxMessageBytes is advertised as SIZE and enforced while reading
	// (552); 0 means 25 MiB, the outbox's default. Set it to the outbox's
	// limit.
	MaxMessageBytes int64
	// MaxRecipients per message (452 4.5.3 beyond); 0 means 500, the
	// outbox's limit.
	MaxRecipients int
	// ReadTimeout bounds the wait for each line from the client, WriteTimeout
	// each reply; 0 means 5 minutes and 1 minute.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
}

// Deps are the services a Server calls.
type Deps struct {
	Outgoing Outgoing
	Users    Users
	Logger   *slog.Logger
}

// ErrServerClosed is returned by Serve and ServeTLS after Shutdown or Close.
var ErrServerClosed = errors.New("submission: server closed")

// Server is the SMTP submission server. Its methods are safe for concurrent
// use.
type Server struct {
	opts Options
	out  Outgoing
	usr  Users
	log  *slog.Logger
	srv  *smtp.Server
	// loopback decides whether a client address is trusted as local; tests
	// replace it to play a remote client.
	loopback func(net.Addr) bool
	// onClosing, when set, runs once Shutdown or Close closed the
	// listeners (tests).
	onClosing func()

	serving sync.WaitGroup // Serve and ServeTLS calls in progress

	mu        sync.Mutex
	closing   bool
	listeners []net.Listener
	conns     map[*conn]struct{}
	busy      int           // sessions between MAIL and the end of their transaction
	changed   chan struct{} // closed and replaced whenever busy drops
}

// New builds a server; Serve and ServeTLS put it on listeners.
func New(opts *Options, deps Deps) (*Server, error) {
	s := &Server{out: deps.Outgoing, usr: deps.Users, log: deps.Logger, loopback: isLoopback,
		conns: map[*conn]struct{}{}, changed: make(chan struct{})}
	if opts != nil {
		s.opts = *opts
	}
	if s.out == nil || s.usr == nil {
		return nil, errors.New("submission: Deps.Outgoing and Deps.Users are required")
	}
	if s.opts.TrustLoopback && s.opts.LoopbackUser == "" {
		return nil, errors.New("submission: trusting loopback needs the user those clients send as")
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.opts.Domain == "" {
		s.opts.Domain, _ = os.Hostname()
		if s.opts.Domain == "" {
			s.opts.Domain = "localhost"
		}
	}
	if s.opts.MaxMessageBytes <= 0 {
		s.opts.MaxMessageBytes = 25 << 20
	}
	if s.opts.MaxRecipients <= 0 {
		s.opts.MaxRecipients = 500
	}
	if s.opts.ReadTimeout <= 0 {
		s.opts.ReadTimeout = 5 * time.Minute
	}
	if s.opts.WriteTimeout <= 0 {
		s.opts.WriteTimeout = time.Minute
	}
	srv := smtp.NewServer(backend{s})
	srv.Domain = s.opts.Domain
	srv.MaxMessageBytes = s.opts.MaxMessageBytes
	srv.MaxRecipients = s.opts.MaxRecipients
	srv.ReadTimeout = s.opts.ReadTimeout
	srv.WriteTimeout = s.opts.WriteTimeout
	srv.EnableSMTPUTF8 = true
	// AUTH is decided per connection (TLS or loopback) by the session.
	srv.AllowInsecureAuth = true
	srv.ErrorLog = smtpLogger{s.log}
	if s.opts.TLS != nil {
		srv.TLSConfig = s.opts.TLS.Clone()
		if srv.TLSConfig.MinVersion < tls.VersionTLS12 {
			srv.TLSConfig.MinVersion = tls.VersionTLS12
		}
	}
	s.srv = srv
	return s, nil
}

// Serve answers SMTP on ln, offering STARTTLS when a certificate is
// configured, until Shutdown or Close; it then returns ErrServerClosed. ctx
// is the base context of the submissions' database work: give one that
// outlives Shutdown (context.WithoutCancel), so that messages in progress
// can be committed while shutting down.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return s.serve(ctx, ln, false)
}

// ServeTLS is Serve with implicit TLS (RFC 8314): TLS from the first byte,
// as on port 465. It needs Options.TLS.
func (s *Server) ServeTLS(ctx context.Context, ln net.Listener) error {
	if s.srv.TLSConfig == nil {
		ln.Close()
		return errors.New("submission: implicit TLS needs a certificate (Options.TLS)")
	}
	return s.serve(ctx, ln, true)
}

func (s *Server) serve(ctx context.Context, ln net.Listener, implicitTLS bool) error {
	tl := &listener{Listener: ln, s: s, ctx: ctx}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners = append(s.listeners, tl)
	s.serving.Add(1)
	s.mu.Unlock()
	defer s.serving.Done()

	var l net.Listener = tl
	if implicitTLS {
		l = tls.NewListener(tl, s.srv.TLSConfig)
	}
	s.log.InfoContext(ctx, "SMTP submission listening", "addr", ln.Addr().String(), "implicit_tls", implicitTLS,
		"starttls", !implicitTLS && s.srv.TLSConfig != nil, "trust_loopback", s.opts.TrustLoopback)
	if !s.loopback(ln.Addr()) && s.srv.TLSConfig == nil {
		s.log.WarnContext(ctx, "SMTP submission listens beyond loopback without TLS: remote clients cannot authenticate",
			"addr", ln.Addr().String())
	}
	err := s.srv.Serve(l)
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return ErrServerClosed
	}
	return fmt.Errorf("submission on %s: %w", ln.Addr(), err)
}

// Shutdown stops the server gracefully: it closes the listeners, answers
// 421 to any new MAIL, waits until every transaction in progress got its
// final reply (or ctx ends), then closes the connections and waits for
// their goroutines. It returns ctx's error if ctx ended first.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.stop(ctx, true)
}

// Close stops the server at once: transactions in progress are cut, so
// their clients, which got no 250, keep their messages and try again.
func (s *Server) Close() error {
	return s.stop(context.Background(), false)
}

func (s *Server) stop(ctx context.Context, graceful bool) error {
	s.mu.Lock()
	first := !s.closing
	s.closing = true
	lns := s.listeners
	s.listeners = nil
	s.mu.Unlock()
	for _, l := range lns {
		_ = l.Close()
	}
	s.serving.Wait() // no connection is accepted after this
	if first && s.onClosing != nil {
		s.onClosing()
	}
	var err error
	if graceful {
		err = s.waitIdle(ctx)
	}
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	waitCtx := ctx
	if err != nil {
		// The connections are closed: their goroutines end as soon as the
		// call they are in returns.
		waitCtx = context.Background()
	}
	if e := s.srv.Shutdown(waitCtx); e != nil && !errors.Is(e, net.ErrClosed) && !errors.Is(e, smtp.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// waitIdle blocks until no session is in a transaction.
func (s *Server) waitIdle(ctx context.Context) error {
	for {
		s.mu.Lock()
		busy, ch := s.busy, s.changed
		s.mu.Unlock()
		if busy == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("submission: %d transactions still in progress: %w", busy, ctx.Err())
		}
	}
}

// begin marks a session busy; it fails once the server is shutting down.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.busy++
	return true
}

func (s *Server) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy--
	close(s.changed)
	s.changed = make(chan struct{})
}

// listener records every accepted connection, with the context of the
// Serve call that accepted it.
type listener struct {
	net.Listener
	s         *Server
	ctx       context.Context
	closeOnce sync.Once
	closeErr  error
}

func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &conn{Conn: nc, s: l.s, ctx: l.ctx}
	l.s.mu.Lock()
	closing := l.s.closing
	if !closing {
		l.s.conns[c] = struct{}{}
	}
	l.s.mu.Unlock()
	if closing {
		nc.Close()
		return nil, net.ErrClosed
	}
	return c, nil
}

func (l *listener) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.Listener.Close() })
	return l.closeErr
}

// conn is one accepted TCP connection.
type conn struct {
	net.Conn
	s         *Server
	ctx       context.Context
	closeOnce sync.Once
}

func (c *conn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		err = c.Conn.Close()
	})
	return err
}

func isLoopback(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}

// smtpLogger sends go-smtp's own error reports to the log at debug level:
// they are about single connections (a client that vanished, a failed TLS
// handshake), not the service.
type smtpLogger struct{ log *slog.Logger }

func (l smtpLogger) Printf(format string, v ...any) {
	l.log.Debug("SMTP submission connection", "detail", fmt.Sprintf(format, v...))
}

func (l smtpLogger) Println(v ...any) {
	l.log.Debug("SMTP submission connection", "detail", fmt.Sprint(v...))
}
