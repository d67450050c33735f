package outgoing

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/netguard"
)

// Explanation codes: the machine-readable half of Explain's answer. They are
// stable; clients may key their own texts on them.
const (
	CodeAuthRejected        = "auth_rejected"
	CodeAppPasswordRequired = "app_password_required"
	CodeSMTPAuthDisabled    = "smtp_auth_disabled"
	CodeAuthNotOffered      = "auth_not_offered"
	CodeAuthMechUnsupported = "auth_mechanism_unsupported"
	CodeAuthNeedsTLS        = "auth_needs_tls"
	CodeAuthRequired        = "auth_required"
	CodeSenderNotAllowed    = "sender_not_allowed"
	CodeRelayDenied         = "relay_denied"
	CodeRecipientRefused    = "recipient_refused"
	CodeInvalidAddress      = "invalid_address"
	CodeMessageTooLarge     = "message_too_large"
	CodeTemporaryFailure    = "temporary_failure"
	CodeRejected            = "rejected"
	CodeTLSNameMismatch     = "tls_name_mismatch"
	CodeTLSUntrusted        = "tls_untrusted"
	CodeTLSExpired          = "tls_expired"
	CodeTLSInvalid          = "tls_invalid"
	CodeTLSNotSpoken        = "tls_not_spoken"
	CodeTLSFailed           = "tls_failed"
	CodeSTARTTLSMissing     = "starttls_missing"
	CodeTimeout             = "timeout"
	CodeDeliveryUnknown     = "delivery_unknown"
	CodeCanceled            = "canceled"
	CodeConnectionRefused   = "connection_refused"
	CodeConnectionClosed    = "connection_closed"
	CodeConnectionFailed    = "connection_failed"
	CodeAddressBlocked      = "address_blocked"
	CodeDNSNotFound         = "dns_not_found"
	CodeDNSFailed           = "dns_failed"
	CodeProtocolError       = "protocol_error"
	CodeInvalidSettings     = "invalid_settings"
	CodeFailed              = "failed"
)

// maxExplainErrText bounds the error text quoted in an explanation.
const maxExplainErrText = 300

// Explain turns a step failure into a code, a plain-language explanation and
// a hint, in lang ("en", "ru" or an Accept-Language value). reply is the
// server's reply, if any; err is the cause, or the *StepError itself (its
// Reply, Timeout and AfterData are then used too). It is a pure function and
// never panics, whatever the input.
func Explain(lang string, step Step, reply *Reply, err error) (code, explanation, hint string) {
	x := explainer{lang: i18n.Parse(lang), step: step}
	defer func() {
		// A safety net for hostile inputs such as typed nil errors whose
		// methods panic: the caller gets the generic explanation.
		if recover() != nil {
			code, explanation, hint = x.out(CodeFailed, "noerr", x.label())
		}
	}()
	var se *StepError
	if errors.As(err, &se) && se != nil {
		if x.step == "" {
			x.step = se.Step
		}
		if reply == nil {
			reply = se.Reply
		}
		x.timeout, x.afterData = se.Timeout, se.AfterData
	}
	var ae *AddressError
	if errors.As(err, &ae) && ae != nil {
		x.addr, x.from, x.hasAddr = ae.Address, ae.From, true
	}
	if reply != nil {
		return x.reply(reply)
	}
	return x.err(err)
}

type explainer struct {
	lang       i18n.Lang
	step       Step
	timeout    bool
	afterData  bool
	addr, from string
	hasAddr    bool
}

// out formats the explanation key "explain.<code>" and the hint key
// "hint.<code>" (the same keys suffixed with "." and variant when variant is
// not empty).
func (x explainer) out(code, variant string, args ...any) (string, string, string) {
	key := code
	if variant != "" {
		key += "." + variant
	}
	return code, i18n.T(x.lang, "explain."+key, args...), i18n.T(x.lang, "hint."+hintKey(code, variant))
}

// hintKey is the hint for a code and variant: most variants share their
// code's hint.
func hintKey(code, variant string) string {
	if code == CodeTimeout && variant != "" {
		return code + "." + variant
	}
	return code
}

func (x explainer) label() string { return stepLabel(x.step) }

// reply explains a reply from the server.
func (x explainer) reply(r *Reply) (string, string, string) {
	text := strings.ToLower(r.Text)
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(text, w) {
				return true
			}
		}
		return false
	}
	enh := func(e string) bool { return r.Enhanced == e || strings.Contains(text, e) }
	envelope := x.step == StepMailFrom || x.step == StepRcpt
	switch {
	case r.Code == 535 && (enh("5.7.139") || has("smtpclientauthentication", "basic authentication is disabled")):
		return x.out(CodeSMTPAuthDisabled, "")
	case (r.Code == 534 && enh("5.7.9")) || has("application-specific password"):
		return x.out(CodeAppPasswordRequired, "")
	case x.step != StepAuth && (r.Code == 530 || has("authentication required")):
		return x.out(CodeAuthRequired, "")
	case x.step == StepAuth && r.Code >= 500 && r.Code < 600:
		return x.out(CodeAuthRejected, "")
	case r.Code >= 400 && r.Code < 500:
		return x.out(CodeTemporaryFailure, "", x.label())
	case (x.step == StepData || x.step == StepMailFrom) && (r.Code == 552 || enh("5.3.4") || enh("5.2.3")):
		return x.out(CodeMessageTooLarge, "")
	case envelope && r.Code >= 500 && r.Code < 600 && has("relay"):
		if x.hasAddr && x.step == StepRcpt {
			return x.out(CodeRelayDenied, "", x.addr)
		}
		return x.out(CodeRelayDenied, "noaddr")
	case x.step == StepRcpt && r.Code >= 500 && r.Code < 600 &&
		has("recipient", "user unknown", "no such user", "mailbox unavailable", "does not exist", "mailbox not found"):
		return x.recipientRefused()
	case envelope && (r.Code == 550 || r.Code == 553 || r.Code == 554 || r.Code == 551) &&
		(has("not owned", "sender", "not allowed", "mismatch", "sendas", "send as", "not authorized", "not permitted") || enh("5.7.1")):
		sender := x.from
		if x.step == StepMailFrom && x.hasAddr {
			sender = x.addr
		}
		if sender == "" {
			return x.out(CodeSenderNotAllowed, "noaddr")
		}
		return x.out(CodeSenderNotAllowed, "", sender)
	case x.step == StepRcpt && r.Code >= 500 && r.Code < 600:
		return x.recipientRefused()
	}
	return x.out(CodeRejected, "", x.label())
}

func (x explainer) recipientRefused() (string, string, string) {
	if x.hasAddr {
		return x.out(CodeRecipientRefused, "", x.addr)
	}
	return x.out(CodeRecipientRefused, "noaddr")
}

// err explains a failure without a reply.
func (x explainer) err(err error) (string, string, string) {
	if errors.Is(err, context.Canceled) {
		return x.out(CodeCanceled, "", x.label())
	}
	if x.timeout || isTimeout(err) {
		return x.timeoutText()
	}
	if x.afterData {
		return x.out(CodeDeliveryUnknown, "")
	}

	var (
		blocked  *netguard.BlockedError
		dnsErr   *net.DNSError
		hostErr  x509.HostnameError
		hostErrP *x509.HostnameError
		unknown  x509.UnknownAuthorityError
		unknownP *x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		invalidP *x509.CertificateInvalidError
		record   tls.RecordHeaderError
		recordP  *tls.RecordHeaderError
		alert    tls.AlertError
		verify   *tls.CertificateVerificationError
		appErr   *apperr.Error
		protoErr textproto.ProtocolError
	)
	switch {
	case err == nil:
		return x.out(CodeFailed, "noerr", x.label())
	case errors.Is(err, ErrSTARTTLSNotOffered):
		return x.out(CodeSTARTTLSMissing, "")
	case errors.Is(err, ErrAuthNotOffered):
		return x.out(CodeAuthNotOffered, "")
	case errors.Is(err, ErrNoAuthMechanism):
		return x.out(CodeAuthMechUnsupported, "")
	case errors.Is(err, ErrPlaintextAuth):
		return x.out(CodeAuthNeedsTLS, "")
	case errors.Is(err, ErrInvalidAddress):
		return x.out(CodeInvalidAddress, "", x.addr)
	case errors.Is(err, ErrNoRecipients):
		return x.out(CodeInvalidAddress, "none")
	case errors.Is(err, ErrReplyTooLong):
		return x.out(CodeProtocolError, "", clip(ErrReplyTooLong.Error()))
	case errors.Is(err, ErrReplyCutOff):
		return x.out(CodeProtocolError, "", clip(ErrReplyCutOff.Error()))
	case errors.Is(err, ErrSTARTTLSInjection):
		return x.out(CodeProtocolError, "", clip(ErrSTARTTLSInjection.Error()))
	case errors.Is(err, ErrConnBroken):
		return x.out(CodeConnectionClosed, "", x.label())
	case errors.As(err, &appErr) && appErr != nil:
		return x.out(CodeInvalidSettings, "", clip(appErr.Field+": "+appErr.Message))
	case errors.As(err, &blocked) && blocked != nil:
		return x.blocked(blocked)
	case errors.Is(err, netguard.ErrBlocked):
		return x.out(CodeAddressBlocked, "generic")
	case errors.As(err, &dnsErr) && dnsErr != nil:
		if dnsErr.IsNotFound {
			return x.out(CodeDNSNotFound, "", dnsErr.Name)
		}
		return x.out(CodeDNSFailed, "", clip(err.Error()))
	case errors.As(err, &hostErr):
		return x.nameMismatch(hostErr.Certificate, hostErr.Host)
	case errors.As(err, &hostErrP) && hostErrP != nil:
		return x.nameMismatch(hostErrP.Certificate, hostErrP.Host)
	case errors.As(err, &unknown):
		return x.untrusted(unknown.Cert)
	case errors.As(err, &unknownP) && unknownP != nil:
		return x.untrusted(unknownP.Cert)
	case errors.As(err, &invalid):
		return x.invalidCert(invalid)
	case errors.As(err, &invalidP) && invalidP != nil:
		return x.invalidCert(*invalidP)
	case errors.As(err, &verify) && verify != nil:
		return x.out(CodeTLSInvalid, "", clip(err.Error()))
	case errors.As(err, &record), errors.As(err, &recordP) && recordP != nil:
		return x.out(CodeTLSNotSpoken, "")
	case errors.As(err, &alert):
		return x.out(CodeTLSFailed, "", clip(err.Error()))
	case errors.Is(err, syscall.ECONNREFUSED):
		return x.out(CodeConnectionRefused, "")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return x.out(CodeConnectionClosed, "", x.label())
	case errors.As(err, &protoErr):
		return x.out(CodeProtocolError, "", clip(err.Error()))
	case x.step == StepDNS:
		return x.out(CodeDNSFailed, "", clip(err.Error()))
	case x.step == StepTCP:
		return x.out(CodeConnectionFailed, "", clip(err.Error()))
	case (x.step == StepTLS || x.step == StepSTARTTLS) && strings.Contains(err.Error(), "tls:"):
		return x.out(CodeTLSFailed, "", clip(err.Error()))
	}
	return x.out(CodeFailed, "", x.label(), clip(err.Error()))
}

func (x explainer) timeoutText() (string, string, string) {
	switch {
	case x.afterData:
		return x.out(CodeTimeout, "data_after")
	case x.step == StepDNS, x.step == StepTCP, x.step == StepTLS, x.step == StepEHLO:
		return x.out(CodeTimeout, string(x.step))
	}
	return x.out(CodeTimeout, "step", x.label())
}

func (x explainer) blocked(b *netguard.BlockedError) (string, string, string) {
	class := x.netClass(b.Class)
	if _, err := netip.ParseAddr(b.Host); err == nil || b.Host == "" {
		return x.out(CodeAddressBlocked, "literal", b.Addr.String(), class)
	}
	return x.out(CodeAddressBlocked, "", b.Host, b.Addr.String(), class)
}

// netClass names an address class in x's language.
func (x explainer) netClass(c netguard.Class) string {
	key := "netclass." + strings.NewReplacer(" ", "_", "(", "", ")", "").Replace(strings.ToLower(string(c)))
	if i18n.Has(key) {
		return i18n.T(x.lang, key)
	}
	return i18n.T(x.lang, "netclass.other", string(c))
}

func (x explainer) nameMismatch(cert *x509.Certificate, host string) (string, string, string) {
	names := netguard.CertNames(cert)
	if len(names) == 0 {
		return x.out(CodeTLSNameMismatch, "nonames", host)
	}
	const maxNames = 20
	list := strings.Join(names[:min(len(names), maxNames)], ", ")
	if len(names) > maxNames {
		list += ", …"
	}
	return x.out(CodeTLSNameMismatch, "", host, list)
}

func (x explainer) untrusted(cert *x509.Certificate) (string, string, string) {
	if cert == nil {
		return x.out(CodeTLSUntrusted, "noissuer")
	}
	issuer := cert.Issuer.CommonName
	if issuer == "" {
		issuer = cert.Issuer.String()
	}
	if issuer == "" {
		return x.out(CodeTLSUntrusted, "noissuer")
	}
	if cert.Issuer.String() == cert.Subject.String() {
		return x.out(CodeTLSUntrusted, "selfsigned", clip(issuer))
	}
	return x.out(CodeTLSUntrusted, "", clip(issuer))
}

func (x explainer) invalidCert(e x509.CertificateInvalidError) (string, string, string) {
	if e.Reason == x509.Expired {
		if e.Cert == nil {
			return x.out(CodeTLSExpired, "nodates")
		}
		return x.out(CodeTLSExpired, "", e.Cert.NotBefore.UTC().Format(time.DateOnly), e.Cert.NotAfter.UTC().Format(time.DateOnly))
	}
	return x.out(CodeTLSInvalid, "", clip(e.Error()))
}

// stepLabel names a step as the protocol does, in every language.
func stepLabel(s Step) string {
	switch s {
	case StepDNS:
		return "DNS"
	case StepTCP:
		return "TCP"
	case StepTLS:
		return "TLS"
	case StepEHLO:
		return "EHLO"
	case StepSTARTTLS:
		return "STARTTLS"
	case StepAuth:
		return "AUTH"
	case StepMailFrom:
		return "MAIL FROM"
	case StepRcpt:
		return "RCPT TO"
	case StepData:
		return "DATA"
	case "":
		return "?"
	}
	return clipN(string(s), 40)
}

func clip(s string) string { return clipN(s, maxExplainErrText) }

// clipN shortens s to at most n runes, valid UTF-8.
func clipN(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}

// needsNewSettings reports whether err is a cause that retrying cannot
// cure: a certificate problem, a refused address, an unknown host name,
// STARTTLS or AUTH missing, bad input.
func needsNewSettings(err error) bool {
	if err == nil {
		return false
	}
	for _, target := range []error{
		ErrSTARTTLSNotOffered, ErrAuthNotOffered, ErrNoAuthMechanism, ErrPlaintextAuth,
		ErrInvalidAddress, ErrNoRecipients, netguard.ErrBlocked, apperr.ErrInvalid,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	var (
		dnsErr *net.DNSError
		verify *tls.CertificateVerificationError
		host   x509.HostnameError
		unk    x509.UnknownAuthorityError
		inv    x509.CertificateInvalidError
		record tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &dnsErr) && dnsErr != nil:
		return dnsErr.IsNotFound
	case errors.As(err, &verify), errors.As(err, &host), errors.As(err, &unk), errors.As(err, &inv), errors.As(err, &record):
		return true
	}
	return false
}
