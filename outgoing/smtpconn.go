package outgoing

// One code path speaks SMTP for both the Check action and the outbox
// workers: Network.Dial runs the connection steps (dns, tcp, tls, ehlo,
// starttls, auth) and Conn.Send a transaction (mail_from, rcpt, data). Each
// step reports its outcome as it completes, and every failure is a
// *StepError naming the step, with the server's reply when there was one.
//
// Invariants:
//   - Certificates are always verified, against Network.RootCAs (the system
//     roots plus MAILSYNC_EXTRA_CA_FILE, see LoadRootCAs). There is no way to
//     skip verification.
//   - starttls is required: a server that does not offer STARTTLS fails the
//     starttls step and no AUTH is ever sent. AUTH is only sent under TLS,
//     except when the settings say security none.
//   - The password is handed to the SASL client and nowhere else; replies
//     that echo it are scrubbed before they reach a report, a log line or an
//     error.
//   - A context bounds every call: each step's reads and writes get a
//     deadline from it (and at most Network.StepTimeout), and cancelling it
//     closes the connection, so a stalled server cannot hang a caller.
//   - A Conn whose step failed without a clean reply (network error,
//     timeout, cancel, AUTH failure) is broken: it is closed and every later
//     call fails at once.
//   - A hostile server gets nowhere (smtpguard.go): what it sends between
//     two commands is bounded (64 KiB), a reply cut off by a lost
//     connection is not taken for a reply, bytes it sends between the 220
//     to STARTTLS and the handshake refuse the connection, and its text is
//     made valid UTF-8 without NUL before it is stored.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wneessen/go-mail/smtp"

	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/internal/secret"
)

// Step names one stage of an SMTP session.
type Step string

// The steps, in the order they run.
const (
	StepDNS      Step = "dns"
	StepTCP      Step = "tcp"
	StepTLS      Step = "tls"
	StepEHLO     Step = "ehlo"
	StepSTARTTLS Step = "starttls"
	StepAuth     Step = "auth"
	StepMailFrom Step = "mail_from"
	StepRcpt     Step = "rcpt"
	StepData     Step = "data"
)

// Defaults of Network's optional fields.
const (
	// DefaultStepTimeout bounds one step when the context allows longer.
	DefaultStepTimeout = 2 * time.Minute
	// DefaultHelloName is the EHLO name when Network.HelloName is empty.
	DefaultHelloName = "localhost"
	// smtpQuitTimeout bounds the polite QUIT of Close.
	smtpQuitTimeout = 5 * time.Second
)

// Errors that are the cause of a StepError (test with errors.Is). None of
// them is temporary: they need a change of settings, not a retry.
var (
	// ErrSTARTTLSNotOffered: security is starttls and the server's EHLO
	// reply does not list STARTTLS.
	ErrSTARTTLSNotOffered = errors.New("the server does not offer STARTTLS")
	// ErrAuthNotOffered: auth is login and the server's EHLO reply does not
	// list AUTH.
	ErrAuthNotOffered = errors.New("the server does not offer AUTH")
	// ErrNoAuthMechanism: the server offers AUTH but neither PLAIN nor
	// LOGIN.
	ErrNoAuthMechanism = errors.New("the server offers neither AUTH PLAIN nor AUTH LOGIN")
	// ErrPlaintextAuth: AUTH would be sent without TLS although security is
	// not none.
	ErrPlaintextAuth = errors.New("refusing to send credentials without TLS")
	// ErrInvalidAddress: an envelope address is empty or not a plain
	// addr-spec (it is never sent).
	ErrInvalidAddress = errors.New("invalid envelope address")
	// ErrNoRecipients: Send was called without recipients.
	ErrNoRecipients = errors.New("no recipients")
	// ErrConnBroken: the Conn failed or was closed earlier; dial again.
	// This one is temporary.
	ErrConnBroken = errors.New("the SMTP connection is no longer usable")
)

// Reply is a server's SMTP reply.
type Reply struct {
	Code     int    `json:"code"`
	Enhanced string `json:"enhanced,omitempty"` // RFC 3463 status, e.g. "5.7.8"
	Text     string `json:"text"`               // lines joined by spaces, enhanced codes removed
}

// String formats the reply as the server sent it, e.g.
// "535 5.7.8 Authentication failed".
func (r *Reply) String() string {
	if r == nil {
		return ""
	}
	s := strconv.Itoa(r.Code)
	if r.Enhanced != "" {
		s += " " + r.Enhanced
	}
	if r.Text != "" {
		s += " " + r.Text
	}
	return s
}

// StepError is a failure at one step. It is what both the check and the
// workers see.
type StepError struct {
	Step      Step
	Reply     *Reply // nil when the server did not answer (network error, timeout)
	Timeout   bool   // the step stalled past its deadline
	AfterData bool   // the final "." was sent and no reply came: the message may have been delivered
	Err       error  // cause (never containing the password)
}

func (e *StepError) Error() string {
	var b strings.Builder
	b.WriteString("smtp ")
	b.WriteString(string(e.Step))
	switch {
	case e.Reply != nil:
		b.WriteString(": server replied ")
		b.WriteString(e.Reply.String())
	case e.Timeout:
		b.WriteString(": timed out")
		if e.Err != nil {
			b.WriteString(" (")
			b.WriteString(e.Err.Error())
			b.WriteString(")")
		}
	case e.Err != nil:
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.AfterData {
		b.WriteString("; the final dot was sent, so the message may have been delivered")
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *StepError) Unwrap() error { return e.Err }

// Temporary reports whether a retry may succeed: 4xx replies, network errors
// and timeouts before DATA's final dot. 5xx replies, a lost reply after the
// final dot (the message may have arrived) and failures that need other
// settings (certificate, STARTTLS missing, refused address, unknown host
// name, no AUTH) are not.
func (e *StepError) Temporary() bool {
	switch {
	case e == nil:
		return false
	case e.Reply != nil:
		return e.Reply.Code >= 400 && e.Reply.Code < 500
	case e.AfterData:
		return false
	case e.Timeout:
		return true
	}
	return !needsNewSettings(e.Err)
}

// AddressError is the cause of a StepError about one envelope address: a
// malformed address, or the server's refusal of it (then it wraps the
// *textproto.Error of the reply).
type AddressError struct {
	Address string // the address at fault
	From    string // the transaction's MAIL FROM address
	Err     error
}

func (e *AddressError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("<%s>", e.Address)
	}
	return fmt.Sprintf("<%s>: %v", e.Address, e.Err)
}

func (e *AddressError) Unwrap() error { return e.Err }

// Dialer is the guarded dialer (*netguard.Dialer satisfies it).
type Dialer interface {
	Resolve(ctx context.Context, host string) ([]netip.Addr, error)
	DialAddr(ctx context.Context, host string, addr netip.AddrPort) (net.Conn, error)
}

// Network holds what every SMTP connection needs. It is safe for concurrent
// use as long as its fields are not changed.
type Network struct {
	Dialer    Dialer
	RootCAs   *x509.CertPool // nil = system roots; build with LoadRootCAs
	HelloName string         // EHLO name, default "localhost"
	Logger    *slog.Logger   // optional
	// StepTimeout bounds each step when the context allows longer; 0 means
	// DefaultStepTimeout. While a message streams, the bound restarts with
	// every chunk written, so only a stall counts.
	StepTimeout time.Duration
}

// LoadRootCAs returns the system roots plus the PEM certificates in
// extraFile (MAILSYNC_EXTRA_CA_FILE; "" = none). Errors name the file.
func LoadRootCAs(extraFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		// No system roots (unusual): only the extra file's certificates
		// are trusted, and without one every certificate fails, loudly.
		pool = x509.NewCertPool()
	}
	if extraFile == "" {
		return pool, nil
	}
	data, err := os.ReadFile(extraFile)
	if err != nil {
		return nil, fmt.Errorf("read extra CA file %s: %w", extraFile, err)
	}
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("extra CA file %s: certificate %d: %w", extraFile, n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("extra CA file %s: no PEM CERTIFICATE block found", extraFile)
	}
	return pool, nil
}

// ConnInfo describes an open connection.
type ConnInfo struct {
	Host         string         `json:"host"`
	Addr         netip.AddrPort `json:"addr"` // the address connected to
	Security     Security       `json:"security"`
	TLSVersion   string         `json:"tls_version,omitempty"` // "TLS 1.3"; "" without TLS
	Hello        string         `json:"hello"`                 // first line of the EHLO reply
	ServerName   string         `json:"server_name"`           // the name the server gave in that line
	AuthOffered  []string       `json:"auth_offered,omitempty"`
	AuthUsed     string         `json:"auth_used,omitempty"` // "PLAIN", "LOGIN" or ""
	MaxSize      int64          `json:"max_size,omitempty"`  // SIZE; 0 when not announced
	EightBitMIME bool           `json:"8bitmime"`
	SMTPUTF8     bool           `json:"smtputf8"`
	Pipelining   bool           `json:"pipelining"`
}

// Conn is an open SMTP session, authenticated when the settings ask for it.
// One goroutine uses it at a time.
type Conn struct {
	n       *Network
	host    string
	raw     net.Conn   // the TCP connection, under TLS if any
	lim     *replyConn // raw as TLS and go-mail read it, bounded (smtpguard.go)
	client  *smtp.Client
	info    ConnInfo
	secrets []string // forms of the password scrubbed from replies
	broken  bool
	// resetPending: Reset was called on a PIPELINING session; the RSET is
	// sent with the next transaction.
	resetPending bool
	pipelined    bool   // a transaction went out pipelined: Reset may wait
	copyBuf      []byte // DATA's copy buffer, kept for the connection's next message
}

// Dial runs the steps dns, tcp, tls (ssl only), ehlo (greeting and EHLO),
// starttls (starttls only) and auth (auth login only: PLAIN if offered, else
// LOGIN). Each step's outcome is reported to trace (may be nil) as it
// completes, with explanations in English. Failures are *StepError; invalid
// settings fail the dns step with the *apperr.Error as cause.
func (n *Network) Dial(ctx context.Context, s Settings, trace func(StepResult)) (*Conn, error) {
	return n.dial(ctx, s, &tracer{lang: i18n.En, emit: trace, log: n.Logger, host: s.Host})
}

func (n *Network) dial(ctx context.Context, s Settings, tr *tracer) (*Conn, error) {
	tr.secrets = passwordForms(s.Login, s.Password)
	if err := s.Validate(""); err != nil {
		return nil, tr.fail(StepDNS, time.Now(), &StepError{Step: StepDNS, Err: err}, "")
	}
	if n.Dialer == nil {
		return nil, tr.fail(StepDNS, time.Now(), &StepError{Step: StepDNS, Err: errors.New("outgoing: Network.Dialer is nil")}, "")
	}

	// dns
	start := time.Now()
	addrs, err := n.Dialer.Resolve(ctx, s.Host)
	if err != nil {
		return nil, tr.fail(StepDNS, start, stepError(ctx, StepDNS, err), "")
	}
	if _, err := netip.ParseAddr(s.Host); err == nil {
		tr.ok(StepDNS, start, nil, tr.t("detail.dns_literal"))
	} else {
		tr.ok(StepDNS, start, nil, tr.t("detail.dns_addrs", netguard.JoinAddrs(addrs)))
	}

	// tcp
	start = time.Now()
	raw, addr, tried, err := netguard.DialFirst(ctx, n.Dialer, s.Host, addrs, s.Port)
	if err != nil {
		return nil, tr.fail(StepTCP, start, stepError(ctx, StepTCP, err), tr.t("detail.tcp_tried", strings.Join(tried, ", ")))
	}
	tr.ok(StepTCP, start, nil, tr.t("detail.tcp_connected", addr.String()))

	c := &Conn{
		n:       n,
		host:    s.Host,
		raw:     raw,
		secrets: tr.secrets,
		info:    ConnInfo{Host: s.Host, Addr: addr, Security: s.Security},
	}
	stop := context.AfterFunc(ctx, c.kill)
	conn, err := c.handshake(ctx, s, tr)
	if !stop() && err == nil {
		// The context ended as the last step succeeded; the AfterFunc
		// closed the connection under it.
		last := lastDialStep(s)
		err = tr.fail(last, time.Now(), stepError(ctx, last, ctx.Err()), "")
	}
	if err != nil {
		c.kill()
		c.broken = true
		return nil, err
	}
	return conn, nil
}

func lastDialStep(s Settings) Step {
	switch {
	case s.Auth == AuthLogin:
		return StepAuth
	case s.Security == SecuritySTARTTLS:
		return StepSTARTTLS
	}
	return StepEHLO
}

// handshake runs tls, ehlo, starttls and auth on c.raw.
func (c *Conn) handshake(ctx context.Context, s Settings, tr *tracer) (*Conn, error) {
	c.lim = &replyConn{Conn: c.raw}
	var conn net.Conn = c.lim
	cfg := c.n.tlsConfig(s.Host)

	// tls
	if s.Security == SecuritySSL {
		start := time.Now()
		c.arm(ctx)
		tc := tls.Client(c.lim, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, tr.fail(StepTLS, start, stepError(ctx, StepTLS, err), "")
		}
		state := tc.ConnectionState()
		c.info.TLSVersion = tls.VersionName(state.Version)
		tr.ok(StepTLS, start, nil, tlsDetail(tr, state))
		conn = tc
	}

	// ehlo: the greeting, then EHLO (or HELO when EHLO is refused)
	start := time.Now()
	c.arm(ctx)
	client, err := smtp.NewClient(conn, s.Host)
	if err != nil {
		return nil, tr.fail(StepEHLO, start, stepError(ctx, StepEHLO, err), "")
	}
	c.client = client
	if err := client.Hello(c.n.helloName()); err != nil {
		return nil, tr.fail(StepEHLO, start, stepError(ctx, StepEHLO, err), "")
	}
	c.noteHello()
	tr.ok(StepEHLO, start, &Reply{Code: 250, Text: cleanText(client.HelloResponse())}, tr.t("detail.ehlo", c.extensions(tr)))

	// starttls
	if s.Security == SecuritySTARTTLS {
		start := time.Now()
		c.arm(ctx)
		if ok, _ := client.Extension("STARTTLS"); !ok {
			return nil, tr.fail(StepSTARTTLS, start, &StepError{Step: StepSTARTTLS, Err: ErrSTARTTLSNotOffered}, "")
		}
		// The handshake runs inside StartTLS, on the EHLO that follows
		// the 220 reply; a certificate error surfaces there.
		if err := client.StartTLS(startTLSConfig(cfg, client.Text)); err != nil {
			return nil, tr.fail(StepSTARTTLS, start, stepError(ctx, StepSTARTTLS, err), "")
		}
		state, ok := client.TLSConnectionState()
		if !ok || !state.HandshakeComplete {
			return nil, tr.fail(StepSTARTTLS, start, &StepError{Step: StepSTARTTLS, Err: errors.New("TLS handshake did not complete")}, "")
		}
		c.info.TLSVersion = tls.VersionName(state.Version)
		c.noteHello()
		tr.ok(StepSTARTTLS, start, &Reply{Code: 250, Text: cleanText(client.HelloResponse())}, tlsDetail(tr, state))
	}

	// auth
	if s.Auth == AuthLogin {
		if err := c.auth(ctx, s, tr); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Conn) auth(ctx context.Context, s Settings, tr *tracer) error {
	start := time.Now()
	c.arm(ctx)
	client := c.client
	_, underTLS := client.TLSConnectionState()
	if !underTLS && s.Security != SecurityNone {
		return tr.fail(StepAuth, start, &StepError{Step: StepAuth, Err: ErrPlaintextAuth}, "")
	}
	offered := c.info.AuthOffered
	none := tr.t("detail.none")
	if offered == nil {
		return tr.fail(StepAuth, start, &StepError{Step: StepAuth, Err: ErrAuthNotOffered}, tr.t("detail.auth_offered", none))
	}
	var (
		mech string
		a    smtp.Auth
	)
	allowClear := s.Security == SecurityNone
	switch {
	case slices.Contains(offered, "PLAIN"):
		mech, a = "PLAIN", smtp.PlainAuth("", s.Login, s.Password.Reveal(), s.Host, allowClear)
	case slices.Contains(offered, "LOGIN"):
		mech, a = "LOGIN", smtp.LoginAuth(s.Login, s.Password.Reveal(), s.Host, allowClear)
	default:
		return tr.fail(StepAuth, start, &StepError{Step: StepAuth, Err: ErrNoAuthMechanism}, tr.t("detail.auth_offered", strings.Join(offered, " ")))
	}
	rec := &authRecorder{Auth: a}
	detail := tr.t("detail.auth", strings.Join(offered, " "), mech)
	if err := client.Auth(rec); err != nil {
		// go-mail aborts the exchange and sends QUIT after a failed AUTH:
		// the connection is over either way.
		return tr.fail(StepAuth, start, stepError(ctx, StepAuth, err), detail)
	}
	c.info.AuthUsed = mech
	r := parseReply(235, rec.final)
	tr.ok(StepAuth, start, r, detail)
	return nil
}

// authRecorder keeps the text of the server's final 235 reply, which
// go-mail hands to Next and otherwise drops.
type authRecorder struct {
	smtp.Auth
	final string
}

func (a *authRecorder) Next(fromServer []byte, more bool) ([]byte, error) {
	if !more {
		a.final = string(fromServer)
	}
	return a.Auth.Next(fromServer, more)
}

// noteHello records what the latest EHLO reply announced.
func (c *Conn) noteHello() {
	cl := c.client
	c.info.Hello = cleanText(cl.HelloResponse())
	c.info.AuthOffered = nil
	if ok, params := cl.Extension("AUTH"); ok {
		c.info.AuthOffered = upperFields(params)
	} else if ok, params := cl.Extension("AUTH=LOGIN"); ok {
		// Pre-RFC 4954 servers announce "AUTH=LOGIN PLAIN".
		c.info.AuthOffered = append([]string{"LOGIN"}, upperFields(params)...)
	}
	c.info.MaxSize = 0
	if ok, params := cl.Extension("SIZE"); ok {
		if v, err := strconv.ParseInt(strings.TrimSpace(params), 10, 64); err == nil && v > 0 {
			c.info.MaxSize = v
		}
	}
	c.info.EightBitMIME, _ = cl.Extension("8BITMIME")
	c.info.SMTPUTF8, _ = cl.Extension("SMTPUTF8")
	c.info.Pipelining, _ = cl.Extension("PIPELINING")
}

// extensions lists the notable extensions of the latest EHLO reply.
func (c *Conn) extensions(tr *tracer) string {
	var out []string
	for _, ext := range []string{"STARTTLS", "AUTH", "SIZE", "8BITMIME", "SMTPUTF8", "PIPELINING", "CHUNKING", "DSN"} {
		ok, params := c.client.Extension(ext)
		if !ok {
			continue
		}
		if params = strings.TrimSpace(params); params != "" {
			ext += " " + params
		}
		out = append(out, ext)
	}
	if len(out) == 0 {
		return tr.t("detail.none")
	}
	return strings.Join(out, ", ")
}

func upperFields(s string) []string {
	f := strings.Fields(strings.ToUpper(s))
	if f == nil {
		f = []string{}
	}
	return f
}

// Send runs mail_from, rcpt (every recipient; the first refusal fails the
// step with its reply) and data: it streams msg, whose line endings become
// CRLF and whose lines starting with "." are dot-stuffed on the way. It
// returns the reply to the final dot, and nil error only when that reply is
// 250. A lost connection or a timeout after the final dot is a *StepError
// with AfterData set. After a failure with a reply the connection stays
// usable: call Reset before the next Send.
func (c *Conn) Send(ctx context.Context, from string, rcpts []string, msg io.Reader, trace func(StepResult)) (*Reply, error) {
	return c.send(ctx, from, rcpts, msg, c.tracer(i18n.En, trace))
}

func (c *Conn) tracer(lang i18n.Lang, emit func(StepResult)) *tracer {
	return &tracer{lang: lang, emit: emit, log: c.n.Logger, host: c.host, secrets: c.secrets}
}

func (c *Conn) send(ctx context.Context, from string, rcpts []string, msg io.Reader, tr *tracer) (reply *Reply, err error) {
	if c.broken {
		return nil, tr.fail(StepMailFrom, time.Now(), &StepError{Step: StepMailFrom, Err: ErrConnBroken}, "")
	}
	stop := context.AfterFunc(ctx, c.kill)
	defer func() {
		if !stop() {
			c.broken = true
		}
	}()
	if c.info.Pipelining {
		return c.sendPipelined(ctx, from, rcpts, msg, tr)
	}
	if err := c.mailFrom(ctx, from, rcpts, tr); err != nil {
		return nil, err
	}
	if err := c.rcptTo(ctx, from, rcpts, tr); err != nil {
		return nil, err
	}
	return c.data(ctx, msg, tr)
}

// sendPipelined is send for a server that announced PIPELINING (RFC 2920):
// a pending RSET, MAIL FROM, every RCPT TO and, for a single recipient,
// DATA go out in one write, and their replies are read in order, every one
// of them, so that the session stays in step with the server whatever it
// refused. Then the body goes as in data. Two round trips a message instead
// of five. With several recipients DATA waits for their replies: one
// refused recipient must not leave the server in DATA for the others.
func (c *Conn) sendPipelined(ctx context.Context, from string, rcpts []string, msg io.Reader, tr *tracer) (*Reply, error) {
	start := time.Now()
	mailCmd, err := c.mailCommand(from, rcpts)
	if err != nil {
		return nil, tr.fail(StepMailFrom, start, &StepError{Step: StepMailFrom, Err: err}, "")
	}
	if se := checkRecipients(from, rcpts); se != nil {
		return nil, tr.fail(StepRcpt, start, se, "")
	}
	c.arm(ctx)
	text := c.client.Text
	reset := c.resetPending
	c.resetPending = false
	c.pipelined = true
	withData := len(rcpts) == 1
	var b strings.Builder
	if reset {
		b.WriteString("RSET\r\n")
	}
	b.WriteString(mailCmd + "\r\n")
	for _, to := range rcpts {
		b.WriteString("RCPT TO:<" + to + ">\r\n")
	}
	if withData {
		b.WriteString("DATA\r\n")
	}
	_, err = text.W.WriteString(b.String())
	if err == nil {
		err = text.W.Flush()
	}
	if err != nil {
		return nil, tr.fail(StepMailFrom, start, c.stepError(ctx, StepMailFrom, err), tr.t("detail.mail_from", from))
	}
	read := func(expect int) (*Reply, error) {
		c.arm(ctx)
		code, m, err := c.readReply(text, expect)
		if err != nil {
			return nil, err
		}
		return scrubReply(parseReply(code, m), c.secrets), nil
	}
	// lost ends the session when a reply did not come at all.
	lost := func(step Step, err error, detail string) (*Reply, error) {
		return nil, tr.fail(step, start, c.stepError(ctx, step, err), detail)
	}
	if reset {
		if _, err := read(250); err != nil {
			if replyOf(err) == nil {
				return lost(StepMailFrom, err, tr.t("detail.mail_from", from))
			}
			// A server that refuses RSET cannot be trusted with the rest.
			c.broken = true
			c.kill()
			return nil, tr.fail(StepMailFrom, start, c.stepError(ctx, StepMailFrom, fmt.Errorf("smtp RSET: %w", err)), "")
		}
	}
	var (
		refused    *StepError // the first refusal, reported once every reply is in
		refusedAt  Step
		refusedDet string
	)
	if r, err := read(250); err != nil {
		if replyOf(err) == nil {
			return lost(StepMailFrom, err, tr.t("detail.mail_from", from))
		}
		refused, refusedAt, refusedDet = c.stepError(ctx, StepMailFrom, &AddressError{Address: from, From: from, Err: err}), StepMailFrom, tr.t("detail.mail_from", from)
	} else {
		tr.ok(StepMailFrom, start, r, tr.t("detail.mail_from", from))
	}
	var last *Reply
	for _, to := range rcpts {
		r, err := read(25)
		if err != nil {
			if replyOf(err) == nil {
				return lost(StepRcpt, err, tr.t("detail.rcpt", to))
			}
			if refused == nil {
				refused, refusedAt, refusedDet = c.stepError(ctx, StepRcpt, &AddressError{Address: to, From: from, Err: err}), StepRcpt, tr.t("detail.rcpt", to)
			}
			continue
		}
		last = r
	}
	if refused == nil {
		tr.ok(StepRcpt, start, last, tr.t("detail.rcpt", strings.Join(rcpts, ", ")))
	}
	if !withData {
		if refused != nil {
			return nil, tr.fail(refusedAt, start, refused, refusedDet)
		}
		return c.data(ctx, msg, tr)
	}
	if _, err := read(354); err != nil {
		if replyOf(err) == nil {
			return lost(StepData, err, "")
		}
		if refused == nil {
			refused, refusedAt = c.stepError(ctx, StepData, err), StepData
		}
		return nil, tr.fail(refusedAt, start, refused, refusedDet)
	}
	if refused != nil {
		// The server took DATA although it refused the sender or a
		// recipient. A DATA cannot be abandoned without delivering it to
		// the recipients it did accept: drop the connection instead.
		c.broken = true
		c.kill()
		return nil, tr.fail(refusedAt, start, refused, refusedDet)
	}
	return c.dataBody(ctx, msg, tr, start)
}

// mailCommand builds the MAIL FROM command, refusing an address that cannot
// be put on the wire.
func (c *Conn) mailCommand(from string, rcpts []string) (string, error) {
	if !validEnvelopeAddress(from) {
		return "", &AddressError{Address: from, From: from, Err: ErrInvalidAddress}
	}
	cmd := "MAIL FROM:<" + from + ">"
	if c.info.EightBitMIME {
		cmd += " BODY=8BITMIME"
	}
	if c.info.SMTPUTF8 && (hasNonASCII(from) || slices.ContainsFunc(rcpts, hasNonASCII)) {
		cmd += " SMTPUTF8"
	}
	return cmd, nil
}

// checkRecipients refuses an empty list and any address that cannot be put
// on the wire.
func checkRecipients(from string, rcpts []string) *StepError {
	if len(rcpts) == 0 {
		return &StepError{Step: StepRcpt, Err: ErrNoRecipients}
	}
	for _, to := range rcpts {
		if !validEnvelopeAddress(to) {
			return &StepError{Step: StepRcpt, Err: &AddressError{Address: to, From: from, Err: ErrInvalidAddress}}
		}
	}
	return nil
}

func (c *Conn) mailFrom(ctx context.Context, from string, rcpts []string, tr *tracer) error {
	start := time.Now()
	cmd, err := c.mailCommand(from, rcpts)
	if err != nil {
		return tr.fail(StepMailFrom, start, &StepError{Step: StepMailFrom, Err: err}, "")
	}
	r, err := c.command(ctx, 250, cmd)
	if err != nil {
		return tr.fail(StepMailFrom, start, c.stepError(ctx, StepMailFrom, &AddressError{Address: from, From: from, Err: err}), tr.t("detail.mail_from", from))
	}
	tr.ok(StepMailFrom, start, r, tr.t("detail.mail_from", from))
	return nil
}

func (c *Conn) rcptTo(ctx context.Context, from string, rcpts []string, tr *tracer) error {
	start := time.Now()
	if se := checkRecipients(from, rcpts); se != nil {
		return tr.fail(StepRcpt, start, se, "")
	}
	var last *Reply
	for _, to := range rcpts {
		r, err := c.command(ctx, 25, "RCPT TO:<"+to+">")
		if err != nil {
			return tr.fail(StepRcpt, start, c.stepError(ctx, StepRcpt, &AddressError{Address: to, From: from, Err: err}), tr.t("detail.rcpt", to))
		}
		last = r
	}
	tr.ok(StepRcpt, start, last, tr.t("detail.rcpt", strings.Join(rcpts, ", ")))
	return nil
}

func (c *Conn) data(ctx context.Context, msg io.Reader, tr *tracer) (*Reply, error) {
	start := time.Now()
	if _, err := c.command(ctx, 354, "DATA"); err != nil {
		return nil, tr.fail(StepData, start, c.stepError(ctx, StepData, err), "")
	}
	return c.dataBody(ctx, msg, tr, start)
}

// dataBody sends the message after the server's 354 and reads the reply to
// the final dot.
func (c *Conn) dataBody(ctx context.Context, msg io.Reader, tr *tracer, start time.Time) (*Reply, error) {
	text := c.client.Text
	dw := &dotStuffer{w: text.W, lineStart: true, empty: true}
	src := &readErrRecorder{r: msg}
	if c.copyBuf == nil {
		c.copyBuf = make([]byte, 32<<10)
	}
	n, err := io.CopyBuffer(&armedWriter{w: dw, c: c, ctx: ctx}, src, c.copyBuf)
	if err == nil {
		// Send the buffered body before the dot, so that a failure here is
		// known to have happened before the dot left.
		err = text.W.Flush()
	}
	if err != nil {
		// A DATA cannot be abandoned without delivering what was sent so
		// far: drop the connection instead of writing the dot.
		c.kill()
		c.broken = true
		if src.err != nil {
			err = fmt.Errorf("read message: %w", src.err)
		}
		return nil, tr.fail(StepData, start, stepError(ctx, StepData, err), tr.t("detail.data", n))
	}
	c.arm(ctx)
	if err := dw.Close(); err != nil {
		c.broken = true
		se := stepError(ctx, StepData, err)
		se.AfterData = true
		return nil, tr.fail(StepData, start, se, tr.t("detail.data", n))
	}
	code, msgText, err := c.readReply(text, 250)
	if err != nil {
		se := c.stepError(ctx, StepData, err)
		if se.Reply == nil {
			se.AfterData = true
		}
		return nil, tr.fail(StepData, start, se, tr.t("detail.data", n))
	}
	r := scrubReply(parseReply(code, msgText), c.secrets)
	tr.ok(StepData, start, r, tr.t("detail.data", n))
	return r, nil
}

// dotStuffer writes a DATA body as RFC 5321 wants it, as textproto's
// DotWriter does — a line that starts with "." gets another, a bare LF
// becomes CRLF, Close ends the body with CRLF "." CRLF — but a line at a
// time instead of a byte at a time, which was most of DATA's own CPU.
type dotStuffer struct {
	w         *bufio.Writer
	lineStart bool // the next byte starts a line
	cr        bool // the last byte written was CR
	empty     bool // nothing written yet
}

func (d *dotStuffer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		d.empty = false
		if d.lineStart && p[0] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				return n - len(p), err
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if _, err := d.w.Write(p); err != nil {
				return n - len(p), err
			}
			d.lineStart, d.cr = false, p[len(p)-1] == '\r'
			return n, nil
		}
		hasCR := (i > 0 && p[i-1] == '\r') || (i == 0 && d.cr)
		if _, err := d.w.Write(p[:i]); err != nil {
			return n - len(p), err
		}
		if !hasCR {
			if err := d.w.WriteByte('\r'); err != nil {
				return n - len(p), err
			}
		}
		if err := d.w.WriteByte('\n'); err != nil {
			return n - len(p), err
		}
		d.lineStart, d.cr = true, false
		p = p[i+1:]
	}
	return n, nil
}

// Close ends the body (with a line break first when it did not end in
// one) and flushes.
func (d *dotStuffer) Close() error {
	end := ".\r\n"
	switch {
	case d.empty || !d.lineStart && !d.cr:
		end = "\r\n" + end
	case d.cr:
		end = "\n" + end
	}
	if _, err := d.w.WriteString(end); err != nil {
		return err
	}
	return d.w.Flush()
}

// armedWriter restarts the step deadline before each chunk, so that a long
// message over a slow link is bounded by stalls, not by its size.
type armedWriter struct {
	w   io.Writer
	c   *Conn
	ctx context.Context
}

func (a *armedWriter) Write(p []byte) (int, error) {
	a.c.arm(a.ctx)
	return a.w.Write(p)
}

// readErrRecorder remembers an error from the message source, to tell it
// from a network error.
type readErrRecorder struct {
	r   io.Reader
	err error
}

func (r *readErrRecorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// Reset sends RSET, ending a failed or finished transaction so that the
// connection can carry the next message. A failure breaks the Conn. When
// the last transaction went out pipelined (Send on a server that announced
// PIPELINING), the RSET goes out in front of the next transaction's
// commands instead, and its reply is checked there.
func (c *Conn) Reset(ctx context.Context) error {
	if c.broken {
		return fmt.Errorf("smtp RSET: %w", ErrConnBroken)
	}
	if c.pipelined {
		// It goes out with the next transaction's commands.
		c.resetPending = true
		return nil
	}
	stop := context.AfterFunc(ctx, c.kill)
	_, err := c.command(ctx, 250, "RSET")
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		c.broken = true
		c.kill()
		if r := replyOf(err); r != nil {
			return fmt.Errorf("smtp RSET: server replied %s", scrubReply(r, c.secrets))
		}
		return fmt.Errorf("smtp RSET: %w", err)
	}
	return nil
}

// Close sends QUIT (bounded by a few seconds) unless the connection is
// broken, then closes it. It always closes; the error is QUIT's, if any.
func (c *Conn) Close() error {
	return c.closeBy(time.Now().Add(smtpQuitTimeout))
}

func (c *Conn) closeBy(deadline time.Time) error {
	if c == nil || c.raw == nil {
		return nil
	}
	var err error
	if !c.broken && c.client != nil {
		_ = c.raw.SetDeadline(deadline)
		err = c.client.Quit() // closes the connection after 221
	}
	c.broken = true
	c.kill()
	if err != nil {
		return fmt.Errorf("smtp QUIT: %w", err)
	}
	return nil
}

// Info describes the connection: TLS version, mechanisms offered and used,
// the server's EHLO line and extensions.
func (c *Conn) Info() ConnInfo {
	info := c.info
	info.AuthOffered = slices.Clone(info.AuthOffered)
	return info
}

// kill closes the TCP connection at once. It is safe from any goroutine;
// it is what a cancelled context runs.
func (c *Conn) kill() { _ = c.raw.Close() }

// arm sets the deadline of the next reads and writes: the context's, or
// StepTimeout from now when that comes first.
func (c *Conn) arm(ctx context.Context) {
	d := time.Now().Add(c.n.stepTimeout())
	if dl, ok := ctx.Deadline(); ok && dl.Before(d) {
		d = dl
	}
	_ = c.raw.SetDeadline(d)
}

// command sends one command line and reads its reply; expect is the code,
// or its first digits, that means success (textproto.Reader.ReadResponse).
// A refusal is a *textproto.Error.
func (c *Conn) command(ctx context.Context, expect int, line string) (*Reply, error) {
	c.arm(ctx)
	text := c.client.Text // read each time: STARTTLS replaces it
	id, err := text.Cmd("%s", line)
	if err != nil {
		return nil, err
	}
	text.StartResponse(id)
	defer text.EndResponse(id)
	code, msg, err := c.readReply(text, expect)
	if err != nil {
		return nil, err
	}
	return scrubReply(parseReply(code, msg), c.secrets), nil
}

// stepError is the package stepError, marking the Conn broken when the
// server gave no reply (the session's state is then unknown).
func (c *Conn) stepError(ctx context.Context, step Step, err error) *StepError {
	se := stepError(ctx, step, err)
	if se.Reply == nil {
		c.broken = true
		c.kill()
	}
	se.Reply = scrubReply(se.Reply, c.secrets)
	return se
}

// stepError builds the StepError for err at step: the server's reply when
// err carries one, else a timeout or a cancellation when the context or the
// connection's deadline ended the step.
func stepError(ctx context.Context, step Step, err error) *StepError {
	se := &StepError{Step: step, Err: err, Reply: replyOf(err)}
	if se.Reply != nil {
		return se
	}
	switch ctxErr := ctx.Err(); {
	case errors.Is(ctxErr, context.DeadlineExceeded):
		se.Timeout = true
		if !isTimeout(err) {
			se.Err = fmt.Errorf("%w (%v)", ctxErr, err)
		}
	case ctxErr != nil:
		// Cancelled: the AfterFunc closed the connection, which is what
		// err reports; the cancellation is the cause.
		se.Err = fmt.Errorf("%w (%v)", ctxErr, err)
	case isTimeout(err):
		se.Timeout = true
	}
	return se
}

// replyOf returns the SMTP reply carried by err, if any.
func replyOf(err error) *Reply {
	var te *textproto.Error
	if errors.As(err, &te) && te != nil {
		return parseReply(te.Code, te.Msg)
	}
	return nil
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne != nil && ne.Timeout()
}

// parseReply splits a reply's text (lines joined by "\n", as
// net/textproto returns them) into the enhanced status code of RFC 3463 and
// the text, dropping the code from every line that repeats it.
func parseReply(code int, msg string) *Reply {
	r := &Reply{Code: code}
	lines := strings.Split(msg, "\n")
	if first, _, _ := strings.Cut(strings.TrimSpace(lines[0]), " "); isEnhancedCode(first, code) {
		r.Enhanced = first
	}
	var text []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if r.Enhanced != "" {
			if rest, ok := strings.CutPrefix(l, r.Enhanced); ok && (rest == "" || rest[0] == ' ') {
				l = strings.TrimSpace(rest)
			}
		}
		if l != "" {
			text = append(text, l)
		}
	}
	r.Text = cleanText(strings.Join(text, " "))
	return r
}

// isEnhancedCode reports whether s is an RFC 3463 status code whose class
// matches the reply code's first digit, e.g. "5.7.8" for 535.
func isEnhancedCode(s string, code int) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || strconv.Itoa(code/100) != parts[0] {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}

// validEnvelopeAddress reports whether a is an addr-spec that can be put
// between angle brackets on a command line: local@domain, without spaces,
// control characters or brackets.
func validEnvelopeAddress(a string) bool {
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 || len(a) > 320 {
		return false
	}
	for _, r := range a {
		if r <= ' ' || r == 0x7f || r == '<' || r == '>' {
			return false
		}
	}
	return true
}

// passwordForms returns the password as it could be echoed: plain, base64
// (AUTH LOGIN) and inside the AUTH PLAIN blob.
func passwordForms(login string, pw secret.Secret) []string {
	p := pw.Reveal()
	if p == "" {
		return nil
	}
	enc := base64.StdEncoding
	return []string{
		enc.EncodeToString([]byte("\x00" + login + "\x00" + p)),
		enc.EncodeToString([]byte(p)),
		p,
	}
}

func scrub(s string, secrets []string) string {
	for _, x := range secrets {
		if x != "" && strings.Contains(s, x) {
			s = strings.ReplaceAll(s, x, secret.Redacted)
		}
	}
	return s
}

// scrubReplyErrors scrubs the text of every *textproto.Error in err's tree
// in place: they are the only errors that carry what a server sent.
func scrubReplyErrors(err error, secrets []string) {
	if err == nil || len(secrets) == 0 {
		return
	}
	switch e := err.(type) {
	case *textproto.Error:
		if e != nil {
			e.Msg = scrub(e.Msg, secrets)
		}
	case interface{ Unwrap() error }:
		scrubReplyErrors(e.Unwrap(), secrets)
	case interface{ Unwrap() []error }:
		for _, inner := range e.Unwrap() {
			scrubReplyErrors(inner, secrets)
		}
	}
}

func scrubReply(r *Reply, secrets []string) *Reply {
	if r == nil || len(secrets) == 0 {
		return r
	}
	out := *r
	out.Text = scrub(out.Text, secrets)
	out.Enhanced = scrub(out.Enhanced, secrets)
	return &out
}

func (n *Network) tlsConfig(host string) *tls.Config {
	return &tls.Config{
		RootCAs:    n.RootCAs,
		ServerName: strings.TrimSuffix(host, "."),
		MinVersion: tls.VersionTLS12,
	}
}

func (n *Network) helloName() string {
	if n.HelloName == "" {
		return DefaultHelloName
	}
	return n.HelloName
}

func (n *Network) stepTimeout() time.Duration {
	if n.StepTimeout <= 0 {
		return DefaultStepTimeout
	}
	return n.StepTimeout
}

func tlsDetail(tr *tracer, st tls.ConnectionState) string {
	version := tls.VersionName(st.Version)
	if len(st.PeerCertificates) == 0 {
		return version
	}
	leaf := st.PeerCertificates[0]
	return tr.t("detail.tls", version, strings.Join(netguard.CertNames(leaf), ", "), leaf.NotAfter.UTC().Format(time.DateOnly))
}

// tracer turns step outcomes into StepResults for the caller and log lines.
type tracer struct {
	lang    i18n.Lang
	emit    func(StepResult)
	log     *slog.Logger
	host    string
	secrets []string
}

func (tr *tracer) t(key string, args ...any) string { return i18n.T(tr.lang, key, args...) }

func (tr *tracer) ok(step Step, start time.Time, r *Reply, detail string) {
	tr.report(StepResult{Step: step, OK: true, ElapsedMS: time.Since(start).Milliseconds(), Reply: r, Detail: detail}, nil)
}

// fail reports se and returns it, with the reply scrubbed of the password.
func (tr *tracer) fail(step Step, start time.Time, se *StepError, detail string) *StepError {
	se.Step = step
	se.Reply = scrubReply(se.Reply, tr.secrets)
	scrubReplyErrors(se.Err, tr.secrets)
	res := StepResult{Step: step, ElapsedMS: time.Since(start).Milliseconds(), Reply: se.Reply, Detail: detail}
	res.Code, res.Explanation, res.Hint = Explain(string(tr.lang), step, se.Reply, se)
	tr.report(res, se)
	return se
}

func (tr *tracer) report(res StepResult, se *StepError) {
	res.Detail = scrub(res.Detail, tr.secrets)
	res.Explanation = scrub(res.Explanation, tr.secrets)
	if tr.log != nil {
		attrs := []slog.Attr{
			slog.String("host", tr.host),
			slog.String("step", string(res.Step)),
			slog.Bool("ok", res.OK),
			slog.Int64("elapsed_ms", res.ElapsedMS),
		}
		if res.Reply != nil {
			attrs = append(attrs, slog.String("reply", res.Reply.String()))
		}
		level := slog.LevelDebug
		if se != nil {
			level = slog.LevelInfo
			attrs = append(attrs, slog.String("code", res.Code), slog.String("error", scrub(se.Error(), tr.secrets)))
		}
		tr.log.LogAttrs(context.Background(), level, "smtp step", attrs...)
	}
	if tr.emit != nil {
		tr.emit(res)
	}
}
