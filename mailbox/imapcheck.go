package mailbox

// The IMAP check and connection. One code path speaks to the server for
// both the Check action (POST /api/v1/mailboxes, before anything is saved)
// and Dial (the sync engine, and appending sent copies): each step reports
// its outcome as it completes, and every failure is an *IMAPError naming
// the step, with the server's reply when there was one.
//
// Steps, in order (a report lists those that ran, the last one failed when
// the check failed):
//
//	security ssl:      dns, tcp, tls, greeting, login, list
//	security starttls: dns, tcp, greeting, starttls, login, list
//	security none:     dns, tcp, greeting, login, list
//
// "tls" is the handshake of implicit TLS, before the server says anything;
// "starttls" is the STARTTLS command and the handshake that follows it,
// after the greeting. These are the names and the order of the SMTP check
// (outgoing), so a client reads both reports the same way: a certificate
// problem fails "tls" or "starttls". "list" runs in the check only.
//
// Invariants:
//   - Certificates are always verified, against IMAPNetwork.RootCAs, with
//     TLS 1.2 at least; there is no way to skip verification.
//   - starttls is required: when the server refuses STARTTLS the
//     connection ends and no LOGIN is sent. LOGIN is never sent when the
//     server announces LOGINDISABLED. The clear-text part runs by hand
//     (imap_starttls.go): a PREAUTH greeting is refused before STARTTLS,
//     and bytes sent between the STARTTLS reply and the handshake refuse
//     the connection instead of being read as responses.
//   - The password is handed to LOGIN and nowhere else: replies that echo
//     it are scrubbed before they reach a report, a log line or an error,
//     and imapclient's DebugWriter (which would record it) is never set.
//   - Every dial is bounded: each read and write gets the dial's deadline
//     (imapConn caps imapclient's own), and the context's end closes the
//     TCP connection, so a stalled server cannot hang a caller.
//   - Nothing is buffered without a bound: the greeting line is kept up to
//     1 KiB, a LIST up to maxFolders folders (the rest is read and
//     dropped, and the report says so), and every response the server
//     sends, for the whole life of the connection (the sync's too), is
//     bounded in size and nesting except message bodies, which go-imap
//     streams (imapConn; ErrResponseTooLong).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/outgoing"
)

// IMAP steps besides outgoing's StepDNS, StepTCP, StepTLS and StepSTARTTLS.
const (
	// StepGreeting waits for the server's greeting ("* OK …").
	StepGreeting outgoing.Step = "greeting"
	// StepLogin sends LOGIN (or accepts PREAUTH).
	StepLogin outgoing.Step = "login"
	// StepList lists the folders (LIST "" "*", with RETURN (SPECIAL-USE)
	// when the server has SPECIAL-USE).
	StepList outgoing.Step = "list"
)

// Defaults.
const (
	// DefaultIMAPCheckTimeout bounds a whole check when Check's timeout is 0.
	DefaultIMAPCheckTimeout = 15 * time.Second
	// DefaultIMAPDialTimeout bounds Dial's steps when ctx allows longer.
	DefaultIMAPDialTimeout = 30 * time.Second
	// maxFolders is the most folders a check keeps from LIST.
	maxFolders = 10000
	// maxReplyText bounds a reply's text in a report.
	maxReplyText = 512
)

// Causes of an IMAPError that are not the server's words (test with
// errors.Is).
var (
	// ErrLoginDisabled: the server announced LOGINDISABLED (RFC 3501,
	// 6.2.3), so LOGIN was not sent.
	ErrLoginDisabled = errors.New("the server does not allow LOGIN on this connection")
	// ErrNotIMAP: the server's first line is not an IMAP greeting.
	ErrNotIMAP = errors.New("the server's first line is not an IMAP greeting")
	// ErrClosedBeforeGreeting: the connection ended before a greeting.
	ErrClosedBeforeGreeting = errors.New("the server closed the connection before its greeting")
)

// IMAPError is a failure at one step of an IMAP connection.
type IMAPError struct {
	Step outgoing.Step
	// Reply is the server's refusal: a tagged NO or BAD, or a greeting
	// other than OK or PREAUTH. IMAP replies have no numeric code, so
	// Reply.Code is 0 and Reply.Text is the response as the server sent
	// it, from the status on: "NO [AUTHENTICATIONFAILED] Authentication
	// failed." (for a greeting, the untagged line: "* BYE Too many
	// connections"). nil when the server did not answer.
	Reply *outgoing.Reply
	// Code is the response code of the reply (RFC 5530), e.g.
	// "AUTHENTICATIONFAILED", "UNAVAILABLE"; "" without one.
	Code string
	// Timeout is true when the step stalled past its deadline.
	Timeout bool
	// Err is the cause, never containing the password.
	Err error
}

func (e *IMAPError) Error() string {
	var b strings.Builder
	b.WriteString("imap ")
	b.WriteString(string(e.Step))
	switch {
	case e.Reply != nil:
		b.WriteString(": server replied ")
		b.WriteString(e.Reply.Text)
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
	return b.String()
}

// Unwrap returns the cause.
func (e *IMAPError) Unwrap() error { return e.Err }

// Temporary reports whether a retry with the same settings may succeed:
// timeouts, lost connections, a busy server (UNAVAILABLE, INUSE, a refusing
// greeting). A refused login, a certificate problem, a refused address, an
// unknown host name or invalid settings are not.
func (e *IMAPError) Temporary() bool {
	switch {
	case e == nil:
		return false
	case e.Reply != nil:
		return e.Step == StepGreeting || e.Code == string(imap.ResponseCodeUnavailable) || e.Code == string(imap.ResponseCodeInUse)
	case e.Timeout:
		return true
	}
	return !imapNeedsNewSettings(e.Err)
}

// Folder is one mailbox folder as LIST shows it.
type Folder struct {
	// Name is the full name as the server names it, decoded to UTF-8 as
	// go-imap gives it (and encodes it back in commands).
	Name      string `json:"name"`
	Delimiter string `json:"delimiter"` // hierarchy separator; "" for a flat namespace
	// SpecialUse is the folder's RFC 6154 attribute, one of "\\Sent",
	// "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Flagged";
	// \Sent wins when the server gives several.
	SpecialUse string `json:"special_use,omitempty"`
	NoSelect   bool   `json:"no_select"` // \Noselect or \NonExistent: cannot be selected
}

// specialUses are the attributes kept in Folder.SpecialUse, by priority.
var specialUses = []imap.MailboxAttr{
	imap.MailboxAttrSent, imap.MailboxAttrDrafts, imap.MailboxAttrTrash, imap.MailboxAttrJunk,
	imap.MailboxAttrArchive, imap.MailboxAttrAll, imap.MailboxAttrFlagged,
}

// IMAPNetwork holds what every IMAP connection needs. It is safe for
// concurrent use as long as its fields are not changed.
type IMAPNetwork struct {
	Dialer  outgoing.Dialer // the guarded dialer (*netguard.Dialer)
	RootCAs *x509.CertPool  // nil = system roots; see outgoing.LoadRootCAs
	Logger  *slog.Logger    // optional; steps at debug, failures at info
}

// IMAPCheckResult is the outcome of a check.
type IMAPCheckResult struct {
	Report outgoing.Report `json:"report"`
	// Folders are the folders LIST returned, INBOX first, then by name;
	// nil unless the list step ran.
	Folders []Folder `json:"folders"`
	// Capabilities are the server's, sorted: after login when the login
	// succeeded, else the ones it announced before (nil when no greeting
	// came).
	Capabilities []string `json:"capabilities,omitempty"`
}

// Check runs the steps up to list, stops at the first failure, logs out and
// returns the result. timeout bounds the whole check, LOGOUT included (0
// means DefaultIMAPCheckTimeout). Explanations and hints are in lang ("en",
// "ru" or an Accept-Language value). The password appears in no field of
// the result.
func (n *IMAPNetwork) Check(ctx context.Context, s IMAPSettings, lang string, timeout time.Duration) IMAPCheckResult {
	if timeout <= 0 {
		timeout = DefaultIMAPCheckTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()

	var res IMAPCheckResult
	res.Report.Steps = []outgoing.StepResult{}
	tr := n.tracer(i18n.Parse(lang), s, func(r outgoing.StepResult) {
		res.Report.Steps = append(res.Report.Steps, r)
	})

	sess, err := n.dial(ctx, s, tr)
	if sess != nil {
		res.Capabilities = capNames(sess.caps)
	}
	if err == nil {
		err = sess.list(ctx, tr, &res)
		sess.logout(ctx)
	}

	if err != nil {
		var ie *IMAPError
		if errors.As(err, &ie) {
			res.Report.Failed = ie.Step
		} else if len(res.Report.Steps) > 0 {
			res.Report.Failed = res.Report.Steps[len(res.Report.Steps)-1].Step
		}
	}
	res.Report.OK = err == nil
	res.Report.ElapsedMS = time.Since(start).Milliseconds()
	scrubIMAPReport(&res.Report, tr.secrets)
	return res
}

// Dial opens a logged-in client with the steps of Check up to login. The
// steps are bounded by ctx and by DefaultIMAPDialTimeout; failures are
// *IMAPError, in English.
//
// ctx also bounds the connection's life: when ctx ends, the connection is
// closed (go-imap has no context; this is how a sync loop stops a client
// blocked in IDLE or FETCH). Pass a context that lives as long as the
// connection should, not a per-request one. TCP keep-alive comes from the
// dialer; go-imap keeps its own per-response timeouts (30 s) after the
// dial. The caller closes the client (Logout, then Close).
func (n *IMAPNetwork) Dial(ctx context.Context, s IMAPSettings) (*imapclient.Client, error) {
	return n.DialWithOptions(ctx, s, nil)
}

// DialWithOptions is Dial with client options, for the handlers of
// unsolicited data (EXISTS, EXPUNGE and FETCH during IDLE) and a word
// decoder; opts may be nil. Its TLSConfig and Dialer are ignored (the
// network's are used) and so is DebugWriter: it would record the password.
func (n *IMAPNetwork) DialWithOptions(ctx context.Context, s IMAPSettings, opts *imapclient.Options) (*imapclient.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, DefaultIMAPDialTimeout)
	defer cancel()
	tr := n.tracer(i18n.En, s, nil)
	tr.opts = opts
	sess, err := n.dial(dctx, s, tr)
	if err != nil {
		return nil, err
	}
	c := sess.client
	// Tie the connection to ctx from now on. The watcher releases the
	// AfterFunc once the client is closed, whoever closes it.
	stop := context.AfterFunc(ctx, sess.kill)
	go func() {
		<-c.Closed()
		stop()
	}()
	if ctx.Err() != nil {
		sess.close()
		return nil, &IMAPError{Step: StepLogin, Err: ctx.Err()}
	}
	return c, nil
}

// tracer returns a tracer for one connection to s; emit may be nil.
func (n *IMAPNetwork) tracer(lang i18n.Lang, s IMAPSettings, emit func(outgoing.StepResult)) *imapTracer {
	return &imapTracer{
		lang:    lang,
		emit:    emit,
		log:     n.Logger,
		host:    s.Host,
		secrets: imapPasswordForms(s.Password),
	}
}

// imapSession is an open connection while the steps run.
type imapSession struct {
	raw    net.Conn // the TCP connection
	conn   *imapConn
	client *imapclient.Client
	caps   imap.CapSet
}

// kill closes the TCP connection at once; safe from any goroutine.
func (s *imapSession) kill() { _ = s.raw.Close() }

// close kills the connection and waits for imapclient's reader to end.
func (s *imapSession) close() {
	s.kill()
	if s.client != nil {
		_ = s.client.Close()
	}
}

// dial runs dns, tcp, tls, greeting, starttls and login. ctx must carry a
// deadline; it bounds every step and its end closes the connection. On
// success the deadline cap is lifted and nothing is tied to ctx any more.
// On failure the connection is closed; the session is still returned
// (without a client) when the greeting was read, for its capabilities.
func (n *IMAPNetwork) dial(ctx context.Context, s IMAPSettings, tr *imapTracer) (*imapSession, error) {
	if err := s.Validate(""); err != nil {
		return nil, tr.fail(ctx, outgoing.StepDNS, time.Now(), err, "")
	}
	if n.Dialer == nil {
		return nil, tr.fail(ctx, outgoing.StepDNS, time.Now(), errors.New("mailbox: IMAPNetwork.Dialer is nil"), "")
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultIMAPDialTimeout)
		defer cancel()
		deadline, _ = ctx.Deadline()
	}

	// dns
	start := time.Now()
	addrs, err := n.Dialer.Resolve(ctx, s.Host)
	if err != nil {
		return nil, tr.fail(ctx, outgoing.StepDNS, start, err, "")
	}
	if _, err := netip.ParseAddr(s.Host); err == nil {
		tr.ok(outgoing.StepDNS, start, nil, tr.t("detail.dns_literal"))
	} else {
		tr.ok(outgoing.StepDNS, start, nil, tr.t("detail.dns_addrs", netguard.JoinAddrs(addrs)))
	}

	// tcp
	start = time.Now()
	raw, addr, tried, err := netguard.DialFirst(ctx, n.Dialer, s.Host, addrs, s.Port)
	if err != nil {
		return nil, tr.fail(ctx, outgoing.StepTCP, start, err, tr.t("detail.tcp_tried", strings.Join(tried, ", ")))
	}
	tr.ok(outgoing.StepTCP, start, nil, tr.t("detail.tcp_connected", addr.String()))

	sess := &imapSession{raw: raw}
	stop := context.AfterFunc(ctx, sess.kill)
	err = n.handshake(ctx, s, sess, deadline, tr)
	if !stop() && err == nil {
		// ctx ended just as the last step succeeded; the AfterFunc has
		// closed the connection under it.
		err = tr.fail(ctx, StepLogin, time.Now(), ctx.Err(), "")
	}
	if err != nil {
		sess.close()
		sess.client = nil
		return sess, err
	}
	if err := sess.conn.setLimit(time.Time{}); err != nil {
		sess.close()
		return nil, tr.fail(ctx, StepLogin, time.Now(), err, "")
	}
	return sess, nil
}

// handshake runs tls, greeting, starttls and login on sess.raw.
func (n *IMAPNetwork) handshake(ctx context.Context, s IMAPSettings, sess *imapSession, deadline time.Time, tr *imapTracer) error {
	cfg := &tls.Config{
		RootCAs:    n.RootCAs,
		ServerName: strings.TrimSuffix(s.Host, "."),
		MinVersion: tls.VersionTLS12,
	}
	if err := sess.raw.SetDeadline(deadline); err != nil {
		return tr.fail(ctx, outgoing.StepTCP, time.Now(), err, "")
	}
	var conn net.Conn = sess.raw

	// tls
	if s.Security == outgoing.SecuritySSL {
		start := time.Now()
		tc := tls.Client(sess.raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return tr.fail(ctx, outgoing.StepTLS, start, err, "")
		}
		tr.ok(outgoing.StepTLS, start, nil, imapTLSDetail(tr, tc.ConnectionState()))
		conn = tc
	}
	opts := tr.clientOptions()

	// greeting, and starttls
	start := time.Now()
	if s.Security == outgoing.SecuritySTARTTLS {
		// The clear-text part by hand (imap_starttls.go), then imapclient
		// on the TLS connection.
		ct := newClearText(sess.raw)
		line, complete, err := ct.readLine()
		if err != nil || !isIMAPGreetingOK(line) {
			if err == nil {
				err = ErrNotIMAP
			}
			return tr.failGreeting(ctx, start, line, complete, err)
		}
		tr.ok(StepGreeting, start, imapLineReply(line, tr.secrets), "")
		start = time.Now()
		if isPreauth(line) {
			return tr.fail(ctx, outgoing.StepSTARTTLS, start, ErrPreauthClearText, "")
		}
		if err := ct.startTLS(); err != nil {
			return tr.fail(ctx, outgoing.StepSTARTTLS, start, err, "")
		}
		tc := tls.Client(sess.raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return tr.fail(ctx, outgoing.StepSTARTTLS, start, err, "")
		}
		sess.conn = newIMAPConn(tc, deadline)
		sess.conn.pending = []byte(tlsGreeting)
		c := imapclient.New(sess.conn, opts)
		sess.client = c
		if err := c.WaitGreeting(); err != nil {
			return tr.fail(ctx, outgoing.StepSTARTTLS, start, sess.conn.cause(err), "")
		}
		tr.ok(outgoing.StepSTARTTLS, start, nil, imapTLSDetail(tr, tc.ConnectionState()))
	} else {
		sess.conn = newIMAPConn(conn, deadline)
		c := imapclient.New(sess.conn, opts)
		sess.client = c
		err := c.WaitGreeting()
		line, complete, _ := sess.conn.greeting()
		if err != nil || !complete || !isIMAPGreetingOK(line) {
			if err == nil {
				err = ErrNotIMAP
			}
			return tr.failGreeting(ctx, start, line, complete, sess.conn.cause(err))
		}
		tr.ok(StepGreeting, start, imapLineReply(line, tr.secrets), "")
	}
	c := sess.client

	// login
	start = time.Now()
	if c.State() == imap.ConnStateAuthenticated {
		// PREAUTH (refused under STARTTLS by imapclient).
		sess.caps = c.Caps()
		tr.ok(StepLogin, start, nil, tr.t("imap.detail.preauth"))
		return nil
	}
	sess.caps = c.Caps()
	if sess.caps == nil && ctx.Err() != nil {
		return tr.fail(ctx, StepLogin, start, ctx.Err(), "")
	}
	if sess.caps.Has(imap.CapLoginDisabled) {
		return tr.fail(ctx, StepLogin, start, ErrLoginDisabled, "")
	}
	if err := c.Login(s.Login, s.Password.Reveal()).Wait(); err != nil {
		return tr.fail(ctx, StepLogin, start, sess.conn.cause(err), "")
	}
	// LOGIN may change the capabilities (RFC 3501 6.2.3). go-imap forgets
	// the old ones only after Wait has returned, so Caps could still give
	// the greeting's (without IDLE, CONDSTORE…): ask the server.
	caps, err := c.Capability().Wait()
	if err != nil {
		return tr.fail(ctx, StepLogin, start, sess.conn.cause(err), "")
	}
	sess.caps = caps
	tr.ok(StepLogin, start, nil, tr.t("imap.detail.login", s.Login))
	return nil
}

// list runs the list step of a check into res, with the connection bound to
// ctx again.
func (sess *imapSession) list(ctx context.Context, tr *imapTracer, res *IMAPCheckResult) error {
	stop := context.AfterFunc(ctx, sess.kill)
	defer stop()
	start := time.Now()
	c := sess.client
	var opts *imap.ListOptions
	if sess.caps.Has(imap.CapSpecialUse) {
		opts = &imap.ListOptions{ReturnSpecialUse: true}
	}
	cmd := c.List("", "*", opts)
	var folders []Folder
	more := 0
	for {
		data := cmd.Next()
		if data == nil {
			break
		}
		if len(folders) == maxFolders {
			more++
			continue
		}
		folders = append(folders, folderOf(data))
	}
	if err := cmd.Close(); err != nil {
		return tr.fail(ctx, StepList, start, sess.conn.cause(err), "")
	}
	if ctx.Err() != nil {
		return tr.fail(ctx, StepList, start, ctx.Err(), "")
	}
	sortFolders(folders)
	res.Folders = folders
	res.Capabilities = capNames(sess.caps)

	var fallback string
	if p, ok := providerByIMAPHost(tr.host); ok {
		fallback = p.SentFolder
	}
	var detail string
	if sent, ok := SentFolder(folders, fallback); ok {
		detail = tr.t("imap.detail.list", len(folders), sent.Name)
	} else {
		detail = tr.t("imap.detail.list_nosent", len(folders))
	}
	if more > 0 {
		detail += "; " + tr.t("imap.detail.list_more", maxFolders, more)
	}
	tr.ok(StepList, start, nil, detail)
	return nil
}

// logout sends LOGOUT, waits for its answer within ctx, and closes.
func (sess *imapSession) logout(ctx context.Context) {
	stop := context.AfterFunc(ctx, sess.kill)
	defer stop()
	_ = sess.client.Logout().Wait()
	sess.close()
}

// folderOf turns LIST data into a Folder.
func folderOf(data *imap.ListData) Folder {
	f := Folder{Name: data.Mailbox}
	if data.Delim != 0 {
		f.Delimiter = string(data.Delim)
	}
	for _, su := range specialUses {
		if slices.Contains(data.Attrs, su) {
			f.SpecialUse = string(su)
			break
		}
	}
	f.NoSelect = slices.Contains(data.Attrs, imap.MailboxAttrNoSelect) || slices.Contains(data.Attrs, imap.MailboxAttrNonExistent)
	return f
}

// sortFolders puts INBOX first, then the rest by name.
func sortFolders(folders []Folder) {
	slices.SortStableFunc(folders, func(a, b Folder) int {
		ai, bi := a.Name == "INBOX", b.Name == "INBOX"
		switch {
		case ai && !bi:
			return -1
		case bi && !ai:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// sentNames are the names SentFolder recognises, by priority.
var sentNames = []string{"Sent", "Sent Items", "Sent Messages", "Sent Mail", "Отправленные"}

// SentFolder picks the Sent folder among selectable folders: the one marked
// \Sent; else the one named fallback (the provider's SentFolder; exact
// name first, then ignoring case); else one whose last level is named
// "Sent", "Sent Items", "Sent Messages", "Sent Mail" or "Отправленные"
// (ignoring case, in that order of preference, the shallowest first).
func SentFolder(folders []Folder, fallback string) (Folder, bool) {
	selectable := func(f Folder) bool { return !f.NoSelect }
	for _, f := range folders {
		if selectable(f) && f.SpecialUse == string(imap.MailboxAttrSent) {
			return f, true
		}
	}
	if fallback != "" {
		for _, f := range folders {
			if selectable(f) && f.Name == fallback {
				return f, true
			}
		}
		for _, f := range folders {
			if selectable(f) && strings.EqualFold(f.Name, fallback) {
				return f, true
			}
		}
	}
	for _, name := range sentNames {
		best, depth := Folder{}, -1
		for _, f := range folders {
			if !selectable(f) {
				continue
			}
			leaf, d := f.Name, 0
			if f.Delimiter != "" {
				parts := strings.Split(f.Name, f.Delimiter)
				leaf, d = parts[len(parts)-1], len(parts)-1
			}
			if strings.EqualFold(leaf, name) && (depth < 0 || d < depth) {
				best, depth = f, d
			}
		}
		if depth >= 0 {
			return best, true
		}
	}
	return Folder{}, false
}

// DefaultSyncFolders returns the folders selected for sync when a mailbox is
// connected: INBOX, and the Sent folder that SentFolder picks, if any.
func DefaultSyncFolders(folders []Folder, fallback string) []string {
	out := []string{"INBOX"}
	if sent, ok := SentFolder(folders, fallback); ok && !strings.EqualFold(sent.Name, "INBOX") {
		out = append(out, sent.Name)
	}
	return out
}

// isIMAPGreetingOK reports whether line is an OK or PREAUTH greeting.
func isIMAPGreetingOK(line string) bool {
	u := strings.ToUpper(line)
	return strings.HasPrefix(u, "* OK") || strings.HasPrefix(u, "* PREAUTH")
}

// imapLineReply is a server line as a Reply: Code 0, the line clipped and
// scrubbed.
func imapLineReply(line string, secrets []string) *outgoing.Reply {
	return &outgoing.Reply{Text: clipIMAP(scrubIMAP(strings.ToValidUTF8(line, "\uFFFD"), secrets), maxReplyText)}
}

// imapErrorReply is a tagged status response as a Reply, e.g. "NO
// [AUTHENTICATIONFAILED] Authentication failed.", scrubbed and clipped.
func imapErrorReply(e *imap.Error, secrets []string) *outgoing.Reply {
	text := string(e.Type)
	if e.Code != "" {
		text += " [" + string(e.Code) + "]"
	}
	if e.Text != "" {
		text += " " + e.Text
	}
	return imapLineReply(text, secrets)
}

func capNames(caps imap.CapSet) []string {
	if caps == nil {
		return nil
	}
	out := make([]string, 0, len(caps))
	for c := range caps {
		out = append(out, string(c))
	}
	slices.Sort(out)
	return out
}

func imapTLSDetail(tr *imapTracer, st tls.ConnectionState) string {
	version := tls.VersionName(st.Version)
	if len(st.PeerCertificates) == 0 {
		return version
	}
	leaf := st.PeerCertificates[0]
	return tr.t("detail.tls", version, strings.Join(netguard.CertNames(leaf), ", "), leaf.NotAfter.UTC().Format(time.DateOnly))
}

// imapPasswordForms returns the password as a server could echo it. LOGIN
// sends it as an IMAP quoted string or literal, so the plain form is the
// one to scrub.
func imapPasswordForms(pw secret.Secret) []string {
	if p := pw.Reveal(); p != "" {
		return []string{p}
	}
	return nil
}

func scrubIMAP(s string, secrets []string) string {
	for _, x := range secrets {
		if x != "" && strings.Contains(s, x) {
			s = strings.ReplaceAll(s, x, secret.Redacted)
		}
	}
	return s
}

// scrubIMAPReport removes the password from every text of the report, a
// last safety net behind the scrubbing of replies as they arrive.
func scrubIMAPReport(rep *outgoing.Report, secrets []string) {
	if len(secrets) == 0 {
		return
	}
	for i := range rep.Steps {
		st := &rep.Steps[i]
		if st.Reply != nil {
			r := *st.Reply
			r.Text = scrubIMAP(r.Text, secrets)
			st.Reply = &r
		}
		st.Detail = scrubIMAP(st.Detail, secrets)
		st.Explanation = scrubIMAP(st.Explanation, secrets)
		st.Hint = scrubIMAP(st.Hint, secrets)
	}
}

// imapTracer turns step outcomes into StepResults and log lines.
type imapTracer struct {
	lang    i18n.Lang
	emit    func(outgoing.StepResult) // nil: no report (Dial)
	log     *slog.Logger
	host    string
	secrets []string
	opts    *imapclient.Options // from DialWithOptions
}

func (tr *imapTracer) t(key string, args ...any) string { return i18n.T(tr.lang, key, args...) }

// clientOptions returns the options for imapclient: the caller's handlers
// and word decoder, never a DebugWriter.
func (tr *imapTracer) clientOptions() *imapclient.Options {
	o := &imapclient.Options{}
	if tr.opts != nil {
		o.UnilateralDataHandler = tr.opts.UnilateralDataHandler
		o.WordDecoder = tr.opts.WordDecoder
	}
	return o
}

func (tr *imapTracer) ok(step outgoing.Step, start time.Time, r *outgoing.Reply, detail string) {
	tr.report(outgoing.StepResult{
		Step: step, OK: true, ElapsedMS: time.Since(start).Milliseconds(), Reply: r, Detail: detail,
	}, nil)
}

// fail turns err at step into an *IMAPError, reports it and returns it.
func (tr *imapTracer) fail(ctx context.Context, step outgoing.Step, start time.Time, err error, detail string) *IMAPError {
	ie := tr.stepError(ctx, step, err)
	res := outgoing.StepResult{Step: step, ElapsedMS: time.Since(start).Milliseconds(), Reply: ie.Reply, Detail: detail}
	if tr.emit != nil {
		res.Code, res.Explanation, res.Hint = explainIMAP(tr.lang, tr.host, ie)
	}
	tr.report(res, ie)
	return ie
}

// failGreeting reports a failed greeting. line is what the server sent
// first; complete says whether it was a whole line.
func (tr *imapTracer) failGreeting(ctx context.Context, start time.Time, line string, complete bool, err error) *IMAPError {
	switch {
	case errors.Is(err, ErrResponseTooLong):
		return tr.fail(ctx, StepGreeting, start, err, "")
	case complete && strings.HasPrefix(line, "* ") && !isIMAPGreetingOK(line):
		// A greeting, but not OK or PREAUTH: BYE (busy, banned).
		ie := &IMAPError{Step: StepGreeting, Reply: imapLineReply(line, tr.secrets), Err: errors.New("the server refused the session in its greeting")}
		if code, ok := responseCode(line); ok {
			ie.Code = code
		}
		return tr.failErr(start, ie, "")
	case complete && !isIMAPGreetingOK(line):
		return tr.fail(ctx, StepGreeting, start, fmt.Errorf("%w: %q", ErrNotIMAP, clipIMAP(scrubIMAP(line, tr.secrets), 80)), "")
	case !isDone(ctx) && !errors.As(err, new(*imap.Error)):
		// The connection ended before a whole line came (imapclient
		// reports that as text only).
		return tr.fail(ctx, StepGreeting, start, fmt.Errorf("%w (%v)", ErrClosedBeforeGreeting, err), "")
	}
	return tr.fail(ctx, StepGreeting, start, err, "")
}

// failErr reports an *IMAPError built by the caller.
func (tr *imapTracer) failErr(start time.Time, ie *IMAPError, detail string) *IMAPError {
	res := outgoing.StepResult{Step: ie.Step, ElapsedMS: time.Since(start).Milliseconds(), Reply: ie.Reply, Detail: detail}
	if tr.emit != nil {
		res.Code, res.Explanation, res.Hint = explainIMAP(tr.lang, tr.host, ie)
	}
	tr.report(res, ie)
	return ie
}

// stepError builds the IMAPError for err at step: the server's reply when
// err is an *imap.Error, else a timeout or a cancellation when the context
// or the connection's deadline ended the step.
func (tr *imapTracer) stepError(ctx context.Context, step outgoing.Step, err error) *IMAPError {
	ie := &IMAPError{Step: step, Err: err}
	var ierr *imap.Error
	if errors.As(err, &ierr) && ierr != nil {
		ie.Reply = imapErrorReply(ierr, tr.secrets)
		ie.Code = string(ierr.Code)
		scrubbed := *ierr
		scrubbed.Text = scrubIMAP(scrubbed.Text, tr.secrets)
		ie.Err = &scrubbed
		return ie
	}
	switch ctxErr := ctx.Err(); {
	case errors.Is(ctxErr, context.DeadlineExceeded) || (ctxErr == nil && deadlinePassed(ctx)):
		ie.Timeout = true
		if !isIMAPTimeout(err) {
			ie.Err = fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
		}
	case ctxErr != nil:
		// Cancelled: the AfterFunc closed the connection, which is what
		// err reports; the cancellation is the cause.
		ie.Err = fmt.Errorf("%w (%v)", ctxErr, err)
	case isIMAPTimeout(err):
		ie.Timeout = true
	}
	return ie
}

func (tr *imapTracer) report(res outgoing.StepResult, ie *IMAPError) {
	res.Detail = scrubIMAP(res.Detail, tr.secrets)
	res.Explanation = scrubIMAP(res.Explanation, tr.secrets)
	if tr.log != nil {
		attrs := []slog.Attr{
			slog.String("host", tr.host),
			slog.String("step", string(res.Step)),
			slog.Bool("ok", res.OK),
			slog.Int64("elapsed_ms", res.ElapsedMS),
		}
		if res.Reply != nil {
			attrs = append(attrs, slog.String("reply", res.Reply.Text))
		}
		level := slog.LevelDebug
		if ie != nil {
			level = slog.LevelInfo
			if res.Code != "" {
				attrs = append(attrs, slog.String("code", res.Code))
			}
			attrs = append(attrs, slog.String("error", scrubIMAP(ie.Error(), tr.secrets)))
		}
		tr.log.LogAttrs(context.Background(), level, "imap step", attrs...)
	}
	if tr.emit != nil {
		tr.emit(res)
	}
}

// responseCode returns the response code of a status line such as
// "* BYE [UNAVAILABLE] Try later", "UNAVAILABLE".
func responseCode(line string) (string, bool) {
	_, rest, ok := strings.Cut(line, "[")
	if !ok {
		return "", false
	}
	code, _, ok := strings.Cut(rest, "]")
	code, _, _ = strings.Cut(code, " ")
	return strings.ToUpper(code), ok && code != ""
}

func isDone(ctx context.Context) bool { return ctx.Err() != nil || deadlinePassed(ctx) }

// deadlinePassed reports whether ctx's deadline is already behind: the
// connection's deadline, set to the same instant, can fire a moment
// before the context's timer does.
func deadlinePassed(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

func isIMAPTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne != nil && ne.Timeout()
}
