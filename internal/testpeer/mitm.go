package testpeer

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// MITMProtocol is the protocol a MITM speaks where it has to look.
type MITMProtocol string

const (
	MITMSMTP MITMProtocol = "smtp"
	MITMIMAP MITMProtocol = "imap"
)

// MITMAttack is what a MITM does to the connections it relays.
type MITMAttack string

const (
	// MITMRelay changes nothing: the client does STARTTLS or implicit TLS
	// with the real server through it. The control case: a check through a
	// relay succeeds, and the MITM sees only TLS records after STARTTLS.
	MITMRelay MITMAttack = "relay"
	// MITMStripSTARTTLS removes STARTTLS (and IMAP's LOGINDISABLED) from
	// every capability list and answers a STARTTLS command as a server
	// without it would (SMTP 502, IMAP BAD), hoping for credentials in
	// clear text.
	MITMStripSTARTTLS MITMAttack = "strip-starttls"
	// MITMRefuseSTARTTLS advertises STARTTLS but answers the command with
	// an error (SMTP 454, IMAP NO) and carries on in clear text.
	MITMRefuseSTARTTLS MITMAttack = "refuse-starttls"
	// MITMCertificate ends the client's TLS itself, with MITMOptions.Cert:
	// from the first byte when the server speaks implicit TLS, else after
	// passing STARTTLS on to the server and its "go ahead" back. A client
	// that accepts the certificate talks to the MITM, which reads it all
	// and relays it to the server over a TLS connection of its own.
	MITMCertificate MITMAttack = "certificate"
)

// MITMOptions configures StartMITM.
type MITMOptions struct {
	Protocol MITMProtocol
	Attack   MITMAttack
	// Upstream is the real server's address, "127.0.0.1:port".
	Upstream string
	// ImplicitTLS says the server speaks TLS from the first byte (SMTP
	// port 465, IMAPS). Only MITMRelay and MITMCertificate apply to it.
	ImplicitTLS bool
	// Cert is what MITMCertificate presents: self-signed, expired, for
	// another name, or from a CA the client does not trust.
	Cert Issued
	// UpstreamTLS is how the MITM reaches the server over TLS once a
	// client accepted its certificate (typically ca.ClientTLS("localhost")).
	// nil closes such a connection instead.
	UpstreamTLS *tls.Config
}

// MITM sits between a client and a real server on 127.0.0.1 and attacks
// the client's TLS as MITMOptions.Attack says. It records every byte the
// client sent that it could read: everything before TLS, and everything
// inside a TLS session the client accepted with the MITM's certificate.
// t.Cleanup closes it and every connection, and waits for them.
type MITM struct {
	t    testing.TB
	opts MITMOptions
	ln   net.Listener
	wg   sync.WaitGroup

	mu       sync.Mutex
	attack   MITMAttack // for connections accepted from now on
	cert     Issued
	conns    []net.Conn
	closed   bool
	clear    []byte // cleartext from every client, in order of arrival per read
	starts   int    // STARTTLS commands the client sent
	accepted int    // TLS handshakes the client completed with the MITM's certificate
	refused  int    // TLS handshakes with the MITM's certificate that the client broke off
	accepts  int    // connections accepted
}

// mitmClearLimit bounds the recorded cleartext.
const mitmClearLimit = 4 << 20

// StartMITM starts a MITM on 127.0.0.1 with a kernel-chosen port.
func StartMITM(t testing.TB, opts MITMOptions) *MITM {
	t.Helper()
	switch opts.Protocol {
	case MITMSMTP, MITMIMAP:
	default:
		t.Fatalf("StartMITM: unknown protocol %q", opts.Protocol)
	}
	if err := checkAttack(opts.Attack, opts.Cert, opts.ImplicitTLS); err != nil {
		t.Fatalf("StartMITM: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("StartMITM: listen: %v", err)
	}
	m := &MITM{t: t, opts: opts, ln: ln, attack: opts.Attack, cert: opts.Cert}
	m.wg.Go(m.accept)
	t.Cleanup(m.Close)
	return m
}

func checkAttack(a MITMAttack, cert Issued, implicitTLS bool) error {
	switch a {
	case MITMRelay:
	case MITMStripSTARTTLS, MITMRefuseSTARTTLS:
		if implicitTLS {
			return fmt.Errorf("%s needs a server that does STARTTLS", a)
		}
	case MITMCertificate:
		if len(cert.TLS.Certificate) == 0 {
			return fmt.Errorf("%s needs a certificate", a)
		}
	default:
		return fmt.Errorf("unknown attack %q", a)
	}
	return nil
}

// SetAttack changes the attack (and the certificate of MITMCertificate)
// for the connections accepted from now on, e.g. to create an account
// through a relay and then attack its sending.
func (m *MITM) SetAttack(a MITMAttack, cert Issued) {
	m.t.Helper()
	if err := checkAttack(a, cert, m.opts.ImplicitTLS); err != nil {
		m.t.Fatalf("MITM.SetAttack: %v", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attack, m.cert = a, cert
}

// mitmSession is one client connection and the attack it gets.
type mitmSession struct {
	m      *MITM
	attack MITMAttack
	cert   Issued
}

// Addr returns "127.0.0.1:port".
func (m *MITM) Addr() string { return m.ln.Addr().String() }

// Port returns the listening port.
func (m *MITM) Port() int { return m.ln.Addr().(*net.TCPAddr).Port }

// Cleartext returns a copy of every byte the MITM could read from its
// clients (the first 4 MiB).
func (m *MITM) Cleartext() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.clear)
}

// Conns returns how many client connections were accepted.
func (m *MITM) Conns() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.accepts
}

// STARTTLS returns how many STARTTLS commands clients sent.
func (m *MITM) STARTTLS() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.starts
}

// Certificates returns how many TLS handshakes with the MITM's own
// certificate clients completed (accepted) and broke off (refused).
func (m *MITM) Certificates() (accepted, refused int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.accepted, m.refused
}

// Close stops listening, closes every connection and waits for them. It is
// idempotent and runs from t.Cleanup.
func (m *MITM) Close() {
	m.mu.Lock()
	already := m.closed
	m.closed = true
	conns := slices.Clone(m.conns)
	m.mu.Unlock()
	if already {
		return
	}
	_ = m.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	m.wg.Wait()
}

// track registers c to be closed by Close; false when Close has begun.
func (m *MITM) track(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		_ = c.Close()
		return false
	}
	m.conns = append(m.conns, c)
	return true
}

func (m *MITM) record(p []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if room := mitmClearLimit - len(m.clear); room > 0 {
		m.clear = append(m.clear, p[:min(len(p), room)]...)
	}
}

func (m *MITM) count(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f()
}

func (m *MITM) accept() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		if !m.track(c) {
			return
		}
		var sess *mitmSession
		m.count(func() {
			m.accepts++
			sess = &mitmSession{m: m, attack: m.attack, cert: m.cert}
		})
		m.wg.Go(func() {
			defer c.Close()
			if err := sess.serve(c); err != nil {
				m.logf("%v", err)
			}
		})
	}
}

// logf reports to the test log while the MITM runs; once it is closing,
// errors are the closing itself.
func (m *MITM) logf(format string, args ...any) {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if !closed {
		m.t.Logf("MITM %s: "+format, append([]any{m.Addr()}, args...)...)
	}
}

// recorder records what the client sends through it.
type recorder struct {
	net.Conn
	m *MITM
}

func (r recorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if n > 0 {
		r.m.record(p[:n])
	}
	return n, err
}

func (m *MITM) dialUpstream() (net.Conn, error) {
	up, err := net.DialTimeout("tcp", m.opts.Upstream, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial upstream %s: %w", m.opts.Upstream, err)
	}
	if !m.track(up) {
		return nil, net.ErrClosed
	}
	return up, nil
}

func (s *mitmSession) serve(c net.Conn) error {
	if s.m.opts.ImplicitTLS {
		if s.attack == MITMRelay {
			up, err := s.m.dialUpstream()
			if err != nil {
				return err
			}
			defer up.Close()
			relay(c, up) // TLS records both ways: nothing readable
			return nil
		}
		return s.takeOver(c, nil, func() (net.Conn, error) {
			up, err := s.m.dialUpstream()
			if err != nil {
				return nil, err
			}
			return s.m.upstreamTLS(up)
		})
	}
	up, err := s.m.dialUpstream()
	if err != nil {
		return err
	}
	defer up.Close()
	cr := bufio.NewReader(recorder{Conn: c, m: s.m})
	ur := bufio.NewReader(up)
	if s.m.opts.Protocol == MITMSMTP {
		return s.smtp(c, cr, up, ur)
	}
	return s.imap(c, cr, up, ur)
}

// upstreamTLS starts TLS to the server on up, for a client that accepted
// the MITM's certificate.
func (m *MITM) upstreamTLS(up net.Conn) (net.Conn, error) {
	if m.opts.UpstreamTLS == nil {
		return nil, errors.New("a client accepted the MITM's certificate; no UpstreamTLS to carry on")
	}
	tc := tls.Client(up, m.opts.UpstreamTLS)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS to the upstream: %w", err)
	}
	return tc, nil
}

// takeOver runs the TLS handshake with the client on c with the MITM's
// certificate. If the client accepts, everything it sends from then on is
// recorded and relayed to the connection upstream returns.
func (s *mitmSession) takeOver(c net.Conn, before func() error, upstream func() (net.Conn, error)) error {
	if before != nil {
		if err := before(); err != nil {
			return err
		}
	}
	tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{s.cert.TLS}, MinVersion: tls.VersionTLS12})
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tc.Handshake(); err != nil {
		s.m.count(func() { s.m.refused++ })
		return nil // the client refused the certificate: the wanted outcome
	}
	_ = c.SetDeadline(time.Time{})
	s.m.count(func() { s.m.accepted++ })
	s.m.logf("the client ACCEPTED the MITM's certificate")
	up, err := upstream()
	if err != nil {
		return err
	}
	defer up.Close()
	relay(recorder{Conn: tc, m: s.m}, up)
	return nil
}

// relay copies both ways until either side ends.
func relay(client io.ReadWriter, up io.ReadWriter) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, client); closeWrite(up); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, up); closeWrite(client); done <- struct{}{} }()
	<-done
	closeAll(client, up)
	<-done
}

// relayBuffered is relay after the lockstep phase: what the bufio readers
// hold goes first.
func relayBuffered(c net.Conn, cr *bufio.Reader, up net.Conn, ur *bufio.Reader) {
	relay(readWriter{Reader: cr, Writer: c, c: c}, readWriter{Reader: ur, Writer: up, c: up})
}

type readWriter struct {
	io.Reader
	io.Writer
	c net.Conn
}

func closeWrite(w any) {
	switch c := w.(type) {
	case readWriter:
		closeWrite(c.c)
	case recorder:
		closeWrite(c.Conn)
	case interface{ CloseWrite() error }:
		_ = c.CloseWrite()
	case io.Closer:
		_ = c.Close()
	}
}

func closeAll(conns ...any) {
	for _, x := range conns {
		switch c := x.(type) {
		case readWriter:
			_ = c.c.Close()
		case recorder:
			_ = c.Conn.Close()
		case io.Closer:
			_ = c.Close()
		}
	}
}

// smtp is the lockstep clear-text phase of an SMTP session: the greeting,
// EHLO and its kin, and STARTTLS, each as the attack says. Any other
// command ends the lockstep: from it on, bytes are relayed as they come
// (and recorded: they are in clear text).
func (s *mitmSession) smtp(c net.Conn, cr *bufio.Reader, up net.Conn, ur *bufio.Reader) error {
	greeting, err := readSMTPReply(ur)
	if err != nil {
		return fmt.Errorf("upstream greeting: %w", err)
	}
	if _, err := c.Write(greeting); err != nil {
		return nil
	}
	for {
		line, err := cr.ReadString('\n')
		if err != nil {
			return nil
		}
		verb, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		switch verb = strings.ToUpper(verb); verb {
		case "STARTTLS":
			s.m.count(func() { s.m.starts++ })
			switch s.attack {
			case MITMStripSTARTTLS:
				_, _ = io.WriteString(c, "502 5.5.1 Unrecognized command\r\n")
				continue
			case MITMRefuseSTARTTLS:
				_, _ = io.WriteString(c, "454 4.7.0 TLS not available due to temporary reason\r\n")
				continue
			}
			if _, err := io.WriteString(up, line); err != nil {
				return nil
			}
			reply, err := readSMTPReply(ur)
			if err != nil {
				return nil
			}
			if !bytes.HasPrefix(reply, []byte("220")) {
				if _, err := c.Write(reply); err != nil {
					return nil
				}
				continue
			}
			return s.afterSTARTTLS(c, cr, up, ur, reply)
		case "EHLO", "HELO", "LHLO", "NOOP", "RSET", "HELP", "QUIT":
			if _, err := io.WriteString(up, line); err != nil {
				return nil
			}
			reply, err := readSMTPReply(ur)
			if err != nil {
				return nil
			}
			if verb == "EHLO" && s.attack == MITMStripSTARTTLS {
				reply = stripSMTPExtension(reply, "STARTTLS")
			}
			if _, err := c.Write(reply); err != nil || verb == "QUIT" {
				return nil
			}
		default:
			if _, err := io.WriteString(up, line); err != nil {
				return nil
			}
			relayBuffered(c, cr, up, ur)
			return nil
		}
	}
}

// afterSTARTTLS runs once the server agreed to STARTTLS (its reply in
// goAhead, not yet passed on): a relay passes TLS through untouched, a
// certificate attack ends the client's TLS itself.
func (s *mitmSession) afterSTARTTLS(c net.Conn, cr *bufio.Reader, up net.Conn, ur *bufio.Reader, goAhead []byte) error {
	if cr.Buffered() > 0 || ur.Buffered() > 0 {
		return errors.New("data pipelined after STARTTLS")
	}
	if s.attack == MITMRelay {
		if _, err := c.Write(goAhead); err != nil {
			return nil
		}
		relay(c, up) // TLS records from here: not recorded
		return nil
	}
	// The server waits for its handshake: do it first, then offer the
	// client the MITM's certificate.
	var upTLS net.Conn
	if s.m.opts.UpstreamTLS != nil {
		var err error
		if upTLS, err = s.m.upstreamTLS(up); err != nil {
			return err
		}
	}
	return s.takeOver(c, func() error {
		_, err := c.Write(goAhead)
		return err
	}, func() (net.Conn, error) {
		if upTLS == nil {
			return nil, errors.New("a client accepted the MITM's certificate; no UpstreamTLS to carry on")
		}
		return upTLS, nil
	})
}

// readSMTPReply reads one reply, every line of it.
func readSMTPReply(r *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		line, err := r.ReadBytes('\n')
		out = append(out, line...)
		if err != nil {
			return out, err
		}
		if len(line) < 4 || line[3] != '-' {
			return out, nil
		}
	}
}

// stripSMTPExtension removes an extension from an EHLO reply and mends the
// continuation marks.
func stripSMTPExtension(reply []byte, ext string) []byte {
	lines := strings.SplitAfter(string(reply), "\n")
	var kept []string
	for i, l := range lines {
		if l == "" {
			continue
		}
		text := strings.TrimRight(l, "\r\n")
		if i > 0 && len(text) >= 4 && strings.EqualFold(strings.Fields(text[4:] + " x")[0], ext) {
			continue
		}
		kept = append(kept, text)
	}
	var b strings.Builder
	for i, text := range kept {
		sep := "-"
		if i == len(kept)-1 {
			sep = " "
		}
		if len(text) < 4 {
			b.WriteString(text + "\r\n")
			continue
		}
		b.WriteString(text[:3] + sep + text[4:] + "\r\n")
	}
	return []byte(b.String())
}

// imap is the lockstep clear-text phase of an IMAP session: the greeting,
// CAPABILITY, NOOP, LOGOUT and STARTTLS, each as the attack says. Any other
// command (LOGIN first of all) ends the lockstep: from it on, bytes are
// relayed as they come (and recorded: they are in clear text).
func (s *mitmSession) imap(c net.Conn, cr *bufio.Reader, up net.Conn, ur *bufio.Reader) error {
	greeting, err := ur.ReadString('\n')
	if err != nil {
		return fmt.Errorf("upstream greeting: %w", err)
	}
	if _, err := io.WriteString(c, s.imapCaps(greeting)); err != nil {
		return nil
	}
	for {
		line, err := cr.ReadString('\n')
		if err != nil {
			return nil
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			if _, err := io.WriteString(up, line); err != nil {
				return nil
			}
			relayBuffered(c, cr, up, ur)
			return nil
		}
		tag, cmd := f[0], strings.ToUpper(f[1])
		switch cmd {
		case "STARTTLS":
			s.m.count(func() { s.m.starts++ })
			switch s.attack {
			case MITMStripSTARTTLS:
				_, _ = io.WriteString(c, tag+" BAD Unknown command\r\n")
				continue
			case MITMRefuseSTARTTLS:
				_, _ = io.WriteString(c, tag+" NO [UNAVAILABLE] STARTTLS is not available now\r\n")
				continue
			}
			if _, err := io.WriteString(up, line); err != nil {
				return nil
			}
			resp, ok, err := readIMAPTagged(ur, tag)
			if err != nil {
				return nil
			}
			if !ok {
				if _, err := io.WriteString(c, resp); err != nil {
					return nil
				}
				continue
			}
			return s.afterSTARTTLS(c, cr, up, ur, []byte(resp))
		case "CAPABILITY", "NOOP", "LOGOUT":
			if _, err := io.WriteString(up, line); err != nil {
				return nil
			}
			resp, _, err := readIMAPTagged(ur, tag)
			if err != nil {
				return nil
			}
			if _, err := io.WriteString(c, s.imapCaps(resp)); err != nil || cmd == "LOGOUT" {
				return nil
			}
		default:
			if _, err := io.WriteString(up, line); err != nil {
				return nil
			}
			relayBuffered(c, cr, up, ur)
			return nil
		}
	}
}

// readIMAPTagged reads responses up to and including the tagged one; ok
// says it was OK.
func readIMAPTagged(r *bufio.Reader, tag string) (string, bool, error) {
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), false, err
		}
		if rest, found := strings.CutPrefix(line, tag+" "); found {
			return b.String(), strings.HasPrefix(strings.ToUpper(rest), "OK"), nil
		}
	}
}

var imapCapRE = regexp.MustCompile(`(?i)(\* CAPABILITY |\[CAPABILITY )([^\]\r\n]*)`)

// imapCaps removes STARTTLS and LOGINDISABLED from the capability lists in
// resp when the attack strips STARTTLS.
func (s *mitmSession) imapCaps(resp string) string {
	if s.attack != MITMStripSTARTTLS {
		return resp
	}
	return imapCapRE.ReplaceAllStringFunc(resp, func(s string) string {
		sub := imapCapRE.FindStringSubmatch(s)
		var kept []string
		for _, c := range strings.Fields(sub[2]) {
			if !strings.EqualFold(c, "STARTTLS") && !strings.EqualFold(c, "LOGINDISABLED") {
				kept = append(kept, c)
			}
		}
		return sub[1] + strings.Join(kept, " ")
	})
}

var credentialCommandRE = regexp.MustCompile(`(?im)^(AUTH\s|\S+\s+(LOGIN|AUTHENTICATE)\s)`)

// CredentialsInClear returns what of login's credentials the MITM read in
// clear text: forms of the password (FindSecret) and SMTP AUTH or IMAP
// LOGIN/AUTHENTICATE command lines. nil means none.
func (m *MITM) CredentialsInClear(login, password string) []string {
	clear := m.Cleartext()
	found := FindSecret(clear, login, password)
	for _, cmd := range credentialCommandRE.FindAll(clear, -1) {
		found = append(found, "command "+strings.TrimSpace(string(cmd)))
	}
	return found
}
