package testpeer

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// Defaults of IMAPOptions.
const (
	DefaultIMAPUser     = "user@example.test"
	DefaultIMAPPassword = "secret"
)

// imapStopTimeout bounds how long Cleanup waits for the connections of an
// in-process server to end, and how long a client waits for a greeting.
const imapStopTimeout = 10 * time.Second

// IMAPOptions shapes an in-process IMAP server. A nil *IMAPOptions means the
// zero value: implicit TLS with a certificate for "localhost" and 127.0.0.1
// from a new CA, one user DefaultIMAPUser with DefaultIMAPPassword.
type IMAPOptions struct {
	// CA issues the server certificate; nil means a new CA.
	CA *CA
	// TLS replaces the server's TLS configuration, e.g. to present a
	// SelfSigned certificate that no client should accept.
	TLS *tls.Config
	// StartTLS serves a cleartext port that offers STARTTLS and refuses
	// LOGIN before it (LOGINDISABLED), instead of implicit TLS.
	StartTLS bool
	// Plain serves cleartext without STARTTLS and accepts LOGIN in clear
	// text. Plain wins over StartTLS.
	Plain bool
	// User and Password of the first user; empty means the defaults.
	User, Password string
	// Caps are the advertised capabilities; nil means IMAP4rev1 with
	// NAMESPACE, UIDPLUS, MOVE and LITERAL+ (IDLE, UNSELECT and ENABLE come
	// with IMAP4rev1). imapmemserver has no CONDSTORE and no SPECIAL-USE.
	Caps imap.CapSet
}

// IMAPServer is an in-process IMAP server: go-imap v2's imapserver over
// imapmemserver, listening on 127.0.0.1 with a kernel-chosen port. Every user
// starts with INBOX, Drafts, Sent, Junk and Trash, all subscribed. The folders
// carry no SPECIAL-USE attribute: imapmemserver v2.0.0-beta.8 drops them (use
// Dovecot to test RFC 6154 detection). t.Cleanup closes the server and waits
// for every connection to end.
type IMAPServer struct {
	ca       *CA
	startTLS bool
	plain    bool
	login    string
	password string

	mem  *imapmemserver.Server
	user *imapmemserver.User
	srv  *imapserver.Server
	ln   *imapListener
	addr *net.TCPAddr
}

// StartIMAP starts an in-process IMAP server for the test.
func StartIMAP(t testing.TB, opts *IMAPOptions) *IMAPServer {
	t.Helper()
	if opts == nil {
		opts = &IMAPOptions{}
	}
	s := &IMAPServer{
		ca:       opts.CA,
		startTLS: opts.StartTLS && !opts.Plain,
		plain:    opts.Plain,
		login:    opts.User,
		password: opts.Password,
		mem:      imapmemserver.New(),
	}
	if s.ca == nil {
		s.ca = NewCA(t)
	}
	if s.login == "" {
		s.login = DefaultIMAPUser
	}
	if s.password == "" {
		s.password = DefaultIMAPPassword
	}
	tlsConfig := opts.TLS
	if tlsConfig == nil && !s.plain {
		tlsConfig = s.ca.ServerTLS(t)
	}
	caps := opts.Caps
	if caps == nil {
		caps = imap.CapSet{
			imap.CapIMAP4rev1:   {},
			imap.CapNamespace:   {},
			imap.CapUIDPlus:     {},
			imap.CapMove:        {},
			imap.CapLiteralPlus: {},
		}
	}
	s.user = s.AddUser(t, s.login, s.password)

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("imap: listen: %v", err)
	}
	s.addr = tcp.Addr().(*net.TCPAddr)
	s.ln = &imapListener{Listener: tcp, conns: make(map[*imapConn]struct{})}
	if !s.plain && !s.startTLS {
		s.ln.tls = tlsConfig
	}
	logger := &imapLogger{t: t}
	srvOpts := &imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return s.ln.session(c, s.mem.NewSession()), nil, nil
		},
		Caps:         caps,
		Logger:       logger,
		InsecureAuth: s.plain,
	}
	if s.startTLS {
		srvOpts.TLSConfig = tlsConfig
	}
	s.srv = imapserver.New(srvOpts)
	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(s.ln) }()

	t.Cleanup(func() {
		// Closing the listener ends Serve (even one that has not begun);
		// then Close cuts the connections imapserver knows of, and closeAll
		// any it had not registered yet.
		_ = s.ln.Close()
		if err := <-served; err != nil {
			t.Errorf("imap: serve: %v", err)
		}
		if err := s.srv.Close(); err != nil {
			t.Errorf("imap: close server: %v", err)
		}
		s.ln.closeAll()
		if err := s.ln.wait(imapStopTimeout); err != nil {
			t.Errorf("imap: %v", err)
		}
		logger.stop()
	})
	return s
}

// AddUser adds a user with the standard mailboxes and returns it, so that a
// test can create mailboxes or append to it directly.
func (s *IMAPServer) AddUser(t testing.TB, login, password string) *imapmemserver.User {
	t.Helper()
	u := imapmemserver.NewUser(login, password)
	for _, name := range []string{"INBOX", "Drafts", "Sent", "Junk", "Trash"} {
		if err := u.Create(name, nil); err != nil {
			t.Fatalf("imap: create %q for %q: %v", name, login, err)
		}
		if err := u.Subscribe(name); err != nil {
			t.Fatalf("imap: subscribe %q for %q: %v", name, login, err)
		}
	}
	s.mem.AddUser(u)
	return u
}

// Addr is the listening address, "127.0.0.1:port".
func (s *IMAPServer) Addr() string { return s.addr.String() }

// Host is the listening IP address, "127.0.0.1".
func (s *IMAPServer) Host() string { return s.addr.IP.String() }

// Port is the listening port.
func (s *IMAPServer) Port() int { return s.addr.Port }

// TLSServerName is the name the certificate is issued for, "localhost".
func (s *IMAPServer) TLSServerName() string { return "localhost" }

// CA is the authority that issued the server certificate.
func (s *IMAPServer) CA() *CA { return s.ca }

// User is the first user's login.
func (s *IMAPServer) User() string { return s.login }

// Password is the first user's password.
func (s *IMAPServer) Password() string { return s.password }

// MemUser is the first user, to create mailboxes in or append to directly.
func (s *IMAPServer) MemUser() *imapmemserver.User { return s.user }

// Deliver appends msg with flags to the first user's folder, as a delivery
// agent would, and returns its UID.
func (s *IMAPServer) Deliver(t testing.TB, folder string, msg []byte, flags ...imap.Flag) imap.UID {
	t.Helper()
	data, err := s.user.Append(folder, imapLiteral{bytes.NewReader(msg)}, &imap.AppendOptions{Flags: flags})
	if err != nil {
		t.Fatalf("imap: deliver to %q: %v", folder, err)
	}
	return data.UID
}

// Kick closes every open connection, as a server restart would; the server
// keeps listening. It returns how many connections it closed.
func (s *IMAPServer) Kick() int { return s.ln.closeAll() }

// Dial connects a go-imap v2 client that verifies the server certificate
// against CA (implicit TLS or STARTTLS, as the server is configured), without
// logging in. opts may be nil; a nil opts.TLSConfig means the verifying
// configuration. t.Cleanup closes the client.
func (s *IMAPServer) Dial(t testing.TB, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	mode := imapModeTLS
	switch {
	case s.plain:
		mode = imapModePlain
	case s.startTLS:
		mode = imapModeStartTLS
	}
	return imapDial(t, s.Addr(), mode, s.ca, s.TLSServerName(), opts)
}

// Client is Dial followed by LOGIN as the first user.
func (s *IMAPServer) Client(t testing.TB) *imapclient.Client {
	t.Helper()
	c := s.Dial(t, nil)
	if err := c.Login(s.login, s.password).Wait(); err != nil {
		t.Fatalf("imap: login %q at %s: %v", s.login, s.Addr(), err)
	}
	return c
}

// imapMode is how a client secures its connection.
type imapMode int

const (
	imapModeTLS imapMode = iota
	imapModeStartTLS
	imapModePlain
)

// imapDial connects a client to addr, closed at Cleanup. Unless opts carries
// its own TLS configuration, the handshake must produce a chain that ends at
// ca: VerifyConnection checks it, so a client that connects has verified the
// server against the test CA, never skipped verification.
func imapDial(t testing.TB, addr string, mode imapMode, ca *CA, serverName string, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	o := imapclient.Options{}
	if opts != nil {
		o = *opts
	}
	if o.TLSConfig == nil {
		o.TLSConfig = imapVerifyingTLS(ca, serverName)
	}
	if o.Dialer == nil {
		o.Dialer = &net.Dialer{Timeout: imapStopTimeout}
	}
	var (
		c   *imapclient.Client
		err error
	)
	switch mode {
	case imapModeTLS:
		c, err = imapclient.DialTLS(addr, &o)
	case imapModeStartTLS:
		c, err = imapclient.DialStartTLS(addr, &o)
	default:
		c, err = imapclient.DialInsecure(addr, &o)
	}
	if err != nil {
		t.Fatalf("imap: dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.WaitGreeting(); err != nil {
		t.Fatalf("imap: greeting from %s: %v", addr, err)
	}
	return c
}

// imapVerifyingTLS trusts only ca and insists that verification happened and
// ended at ca.
func imapVerifyingTLS(ca *CA, serverName string) *tls.Config {
	cfg := ca.ClientTLS(serverName)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		for _, chain := range cs.VerifiedChains {
			if len(chain) > 0 && chain[len(chain)-1].Equal(ca.Cert) {
				return nil
			}
		}
		return errors.New("testpeer: server certificate was not verified against the test CA")
	}
	return cfg
}

// imapLiteral adapts a bytes.Reader to imap.LiteralReader.
type imapLiteral struct{ *bytes.Reader }

func (l imapLiteral) Size() int64 { return l.Reader.Size() }

// imapListener tracks every accepted connection so that Cleanup can close
// the ones imapserver has not registered yet and wait for all sessions to
// end, and Kick can cut them. With tls set it wraps connections in TLS itself
// so that imapserver still sees a *tls.Conn.
type imapListener struct {
	net.Listener
	tls *tls.Config

	mu    sync.Mutex
	conns map[*imapConn]struct{}
	wg    sync.WaitGroup // one per accepted connection, done when its session closes
}

type imapConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (l *imapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ic := &imapConn{Conn: c}
	l.wg.Add(1)
	ic.done = func() { ic.once.Do(l.wg.Done) }
	l.mu.Lock()
	l.conns[ic] = struct{}{}
	l.mu.Unlock()
	if l.tls != nil {
		return tls.Server(ic, l.tls), nil
	}
	return ic, nil
}

// session wraps the session imapserver runs on c so that its end is counted.
func (l *imapListener) session(c *imapserver.Conn, sess imapserver.Session) imapserver.Session {
	nc := c.NetConn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	ic, ok := nc.(*imapConn)
	if !ok {
		panic(fmt.Sprintf("testpeer: unexpected connection type %T", nc))
	}
	full, ok := sess.(imapserver.SessionIMAP4rev2)
	if !ok {
		panic(fmt.Sprintf("testpeer: imapmemserver session %T lacks NAMESPACE or MOVE", sess))
	}
	return &imapSession{SessionIMAP4rev2: full, l: l, c: ic}
}

// closeAll closes every open connection and returns how many it closed.
func (l *imapListener) closeAll() int {
	l.mu.Lock()
	conns := make([]*imapConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Conn.Close()
	}
	return len(conns)
}

// wait waits until every accepted connection's session has closed.
func (l *imapListener) wait(timeout time.Duration) error {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		l.mu.Lock()
		n := len(l.conns)
		l.mu.Unlock()
		return fmt.Errorf("%d connection(s) still open after %v", n, timeout)
	}
}

// imapSession counts the end of one imapmemserver session.
type imapSession struct {
	imapserver.SessionIMAP4rev2
	l *imapListener
	c *imapConn
}

func (s *imapSession) Close() error {
	err := s.SessionIMAP4rev2.Close()
	s.l.mu.Lock()
	delete(s.l.conns, s.c)
	s.l.mu.Unlock()
	s.c.done()
	return err
}

// imapLogger sends imapserver's messages to the test log until the server
// has stopped, so that nothing logs after the test has ended.
type imapLogger struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (l *imapLogger) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Logf("imapserver: "+format, args...)
	}
}

func (l *imapLogger) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
}
