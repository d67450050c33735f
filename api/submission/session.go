package submission

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/users"
	"github.com/mailsync/mailsync/outgoing"
)

// backend keeps smtp.Backend out of Server's method set.
type backend struct{ s *Server }

// NewSession implements smtp.Backend: go-smtp calls it at the first EHLO of a
// connection and again after STARTTLS.
func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	raw := c.Conn()
	_, isTLS := c.TLSConnectionState()
	if tc, ok := raw.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	ctx := context.Background()
	if tc, ok := raw.(*conn); ok {
		ctx = tc.ctx
	}
	return &session{
		s: b.s, ctx: ctx, tls: isTLS,
		remote:   c.Conn().RemoteAddr().String(),
		loopback: b.s.loopback(c.Conn().RemoteAddr()),
	}, nil
}

// session is one EHLO-to-QUIT (or STARTTLS) stretch of a connection. go-smtp
// calls it from the connection's goroutine only (BDAT's Data runs on another
// goroutine that go-smtp waits for).
type session struct {
	s        *Server
	ctx      context.Context
	tls      bool
	loopback bool
	remote   string

	user  *users.User // who sends: authenticated, or the trusted loopback user
	authd bool        // user came from AUTH
	login string      // the AUTH user name, for the log
	busy  bool
	from  string
	rcpts []string
}

var _ smtp.AuthSession = (*session)(nil)

// authAllowed says whether credentials may cross this connection: under TLS
// or on loopback.
func (ss *session) authAllowed() bool { return ss.tls || ss.loopback }

// AuthMechanisms implements smtp.AuthSession: nothing is offered where a
// token would travel in clear text over a network.
func (ss *session) AuthMechanisms() []string {
	if !ss.authAllowed() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession.
func (ss *session) Auth(mech string) (sasl.Server, error) {
	if !ss.authAllowed() {
		// RFC 4954 section 6.
		return nil, &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11},
			Message: "Encryption required: use STARTTLS (or the implicit-TLS port) before AUTH"}
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return smtp.ErrAuthFailed
			}
			return ss.authenticate(mech, username, password)
		}), nil
	case sasl.Login:
		return &loginServer{check: func(username, password string) error {
			return ss.authenticate(mech, username, password)
		}}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// authenticate checks an API token given as the password; the user name is
// only logged.
func (ss *session) authenticate(mech, login, token string) error {
	u, err := ss.s.usr.Authenticate(ss.ctx, token)
	if errors.Is(err, apperr.ErrUnauthenticated) {
		ss.s.log.WarnContext(ss.ctx, "SMTP submission authentication failed", "remote", ss.remote,
			"login", login, "mechanism", mech, "tls", ss.tls)
		return smtp.ErrAuthFailed
	}
	if err != nil {
		ss.s.log.ErrorContext(ss.ctx, "SMTP submission authentication", "remote", ss.remote, "error", err)
		return &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
			Message: "Temporary authentication failure; try again later"}
	}
	ss.user, ss.authd, ss.login = &u, true, login
	ss.s.log.DebugContext(ss.ctx, "SMTP submission authenticated", "remote", ss.remote, "user_id", u.ID,
		"login", login, "mechanism", mech, "tls", ss.tls)
	return nil
}

// Mail implements smtp.Session. It starts a transaction: a client that is
// neither authenticated nor a trusted loopback client is refused here.
func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.user == nil {
		if !ss.s.opts.TrustLoopback || !ss.loopback {
			return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0},
				Message: "Authentication required: AUTH with your mailsync API token as the password"}
		}
		u, err := ss.s.usr.ByEmail(ss.ctx, ss.s.opts.LoopbackUser)
		if err != nil {
			ss.s.log.ErrorContext(ss.ctx, "SMTP submission: the user trusted loopback clients send as is not available",
				"user", ss.s.opts.LoopbackUser, "error", err)
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
				Message: "Temporary failure: the loopback sender is not available; try again later"}
		}
		ss.user = &u
	}
	if !ss.busy {
		if !ss.s.begin() {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2},
				Message: "Service shutting down; try again later"}
		}
		ss.busy = true
	}
	ss.from, ss.rcpts = from, nil
	return nil
}

// Rcpt implements smtp.Session; the outbox checks the addresses again.
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if a, err := mail.ParseAddress(to); err != nil || a.Name != "" || !strings.Contains(to, "@") {
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3},
			Message: fmt.Sprintf("Bad recipient address syntax: %s", oneLine(to))}
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

// Data implements smtp.Session: the message is committed to the outbox
// before the 250 is written.
func (ss *session) Data(r io.Reader) error {
	u := ss.user
	c := outgoing.Caller{UserID: u.ID, Admin: u.Admin, Lang: "en"}
	m, err := ss.s.out.SubmitRaw(ss.ctx, c, ss.from, ss.rcpts, r, outgoing.SubmitOptions{})
	if err != nil {
		return ss.refuse(err)
	}
	ss.s.log.InfoContext(ss.ctx, "SMTP submission accepted", "outbox_id", m.ID, "message_id", m.MessageID,
		"user_id", u.ID, "from", m.FromAddr, "recipients", len(ss.rcpts), "size", m.Size,
		"remote", ss.remote, "tls", ss.tls, "authenticated", ss.authd)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0},
		Message: fmt.Sprintf("OK: queued as <%s>", m.MessageID)}
}

// refuse turns an error of SubmitRaw into the reply, and logs it.
func (ss *session) refuse(err error) error {
	reply := replyFor(err)
	attrs := []any{"remote", ss.remote, "user_id", ss.user.ID, "code", reply.Code, "reply", reply.Message}
	if reply.Code == 451 {
		ss.s.log.ErrorContext(ss.ctx, "SMTP submission failed", append(attrs, "error", err)...)
	} else {
		ss.s.log.InfoContext(ss.ctx, "SMTP submission refused", attrs...)
	}
	return reply
}

// replyFor maps an error of SubmitRaw to the SMTP reply: the one place that
// does.
func replyFor(err error) *smtp.SMTPError {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se // go-smtp's own, e.g. 552 while reading
	}
	e, ok := apperr.As(err)
	if !ok {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
			Message: "Temporary failure: the message was not queued; try again later"}
	}
	msg := oneLine(e.Message)
	switch {
	case errors.Is(err, apperr.ErrTooLarge):
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: msg}
	case errors.Is(err, apperr.ErrForbidden), errors.Is(err, apperr.ErrUnprocessable):
		// RFC 3463: 5.7.1 "Delivery not authorized, message refused".
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: msg}
	case errors.Is(err, apperr.ErrInvalid):
		if e.Field != "" {
			msg = e.Field + ": " + msg
		}
		if strings.HasPrefix(e.Field, "rcpt") {
			return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: msg}
		}
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: msg}
	case errors.Is(err, apperr.ErrRateLimited):
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: msg}
	default:
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
			Message: "Temporary failure: the message was not queued; try again later"}
	}
}

// Reset implements smtp.Session: the transaction ends (after DATA's reply,
// on RSET or a new EHLO).
func (ss *session) Reset() {
	ss.from, ss.rcpts = "", nil
	if ss.busy {
		ss.busy = false
		ss.s.end()
	}
}

// Logout implements smtp.Session: the connection closed or STARTTLS
// replaced the session.
func (ss *session) Logout() error {
	ss.Reset()
	return nil
}

// oneLine keeps a reply text on one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
}

// loginServer is the server side of the obsolete SASL LOGIN mechanism
// (draft-murchison-sasl-login), which Outlook, PHPMailer and many plugins
// still use; go-sasl has only its client. An initial response is the user
// name.
type loginServer struct {
	check    func(username, password string) error
	step     int
	username string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		if resp == nil {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.username, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 1:
		l.username, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.username, string(resp))
	}
}
