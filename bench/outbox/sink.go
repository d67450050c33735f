package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// sink is a local SMTP server that accepts every message from one
// authenticated user, over STARTTLS only, and counts what arrives. It
// stands in for the account's real server: it costs the same for every
// contender and does as little as a server can.
type sink struct {
	login, password string
	srv             *smtp.Server
	ln              net.Listener
	done            chan struct{}

	mu      sync.Mutex
	n       int             // messages accepted in this phase
	ids     map[string]int  // Message-ID → arrivals in this phase
	added   chan struct{}   // closed and replaced whenever n grows
	bytes   atomic.Int64    // message bytes accepted in this phase
	plainTx atomic.Int64    // sessions that sent MAIL without TLS (must stay 0)
	mechs   map[string]bool // AUTH mechanisms used
	gate    chan struct{}   // while not nil, MAIL FROM waits until it is closed
}

// startSink listens on 127.0.0.1 with a certificate for localhost and
// 127.0.0.1 signed by ca.
func startSink(ca *testCA, login, password string) (*sink, error) {
	cert, err := ca.issue("localhost", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	s := &sink{login: login, password: password, done: make(chan struct{}), mechs: map[string]bool{}}
	s.reset()
	srv := smtp.NewServer(s)
	srv.Domain = "localhost"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.ReadTimeout, srv.WriteTimeout = 2*time.Minute, 2*time.Minute
	srv.MaxMessageBytes = 32 << 20
	srv.MaxRecipients = 100
	srv.ErrorLog = discardLogger{}
	s.srv = srv
	s.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(s.done)
		_ = srv.Serve(s.ln)
	}()
	return s, nil
}

func (s *sink) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *sink) close() {
	s.release()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
}

// reset starts a new phase: counts go back to zero.
func (s *sink) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n = 0
	s.ids = map[string]int{}
	s.added = make(chan struct{})
	s.bytes.Store(0)
}

// wait blocks until n messages arrived in this phase.
func (s *sink) wait(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		have, added := s.n, s.added
		s.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the sink has %d of %d messages: %w", have, n, ctx.Err())
		case <-added:
		}
	}
}

// stats returns the arrivals of this phase: messages, distinct Message-IDs
// and bytes.
func (s *sink) stats() (n, distinct int, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, len(s.ids), s.bytes.Load()
}

// mechanisms lists the AUTH mechanisms clients used.
func (s *sink) mechanisms() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ms []string
	for m := range s.mechs {
		ms = append(ms, m)
	}
	slices.Sort(ms)
	return strings.Join(ms, ", ")
}

// hold makes every MAIL FROM wait until release: the sender's connections
// stall while its queue fills.
func (s *sink) hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
}

// release lets held and later transactions go on.
func (s *sink) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
}

func (s *sink) record(id string, size int) {
	s.bytes.Add(int64(size))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.ids[id]++
	close(s.added)
	s.added = make(chan struct{})
}

// NewSession implements smtp.Backend.
func (s *sink) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	return &sinkSession{s: s, tls: isTLS}, nil
}

type sinkSession struct {
	s    *sink
	tls  bool
	user string
	buf  bytes.Buffer
}

var _ smtp.AuthSession = (*sinkSession)(nil)

func (ss *sinkSession) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

func (ss *sinkSession) Auth(mech string) (sasl.Server, error) {
	check := func(login, password string) error {
		if login != ss.s.login || password != ss.s.password {
			return smtp.ErrAuthFailed
		}
		ss.user = login
		ss.s.mu.Lock()
		ss.s.mechs[mech] = true
		ss.s.mu.Unlock()
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, login, password string) error {
			if identity != "" && identity != login {
				return smtp.ErrAuthFailed
			}
			return check(login, password)
		}), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (ss *sinkSession) Mail(string, *smtp.MailOptions) error {
	ss.s.mu.Lock()
	gate := ss.s.gate
	ss.s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if !ss.tls {
		ss.s.plainTx.Add(1)
	}
	if ss.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	return nil
}

func (ss *sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }

// Data reads the message and notes its Message-ID. The buffer is reused
// between the messages of a session.
func (ss *sinkSession) Data(r io.Reader) error {
	ss.buf.Reset()
	if _, err := ss.buf.ReadFrom(r); err != nil {
		return err
	}
	ss.s.record(messageID(ss.buf.Bytes()), ss.buf.Len())
	return nil
}

func (ss *sinkSession) Reset()        {}
func (ss *sinkSession) Logout() error { return nil }

// messageID returns the Message-ID of a message without angle brackets, or
// "" when it has none.
func messageID(msg []byte) string {
	hdr, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(msg))).ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	return strings.Trim(hdr.Get("Message-Id"), "<> ")
}

// loginServer is the server side of the obsolete SASL LOGIN mechanism, which
// go-sasl does not provide.
type loginServer struct {
	check func(login, password string) error
	step  int
	login string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
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
		return nil, true, l.check(l.login, string(resp))
	}
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

// testCA is a certificate authority generated for one run.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA() (*testCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mailsync benchmark CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue signs a server certificate for names (DNS names or IP addresses).
func (ca *testCA) issue(names ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
