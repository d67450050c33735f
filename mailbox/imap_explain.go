package mailbox

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/outgoing"
)

// Explanation codes the IMAP check adds to outgoing's (outgoing.Code*).
const (
	// CodeIMAPDisabled: the provider has IMAP access turned off for the
	// mailbox.
	CodeIMAPDisabled = "imap_disabled"
	// CodePasswordExpired: the server refused the login because the
	// password expired (RFC 5530 EXPIRED).
	CodePasswordExpired = "password_expired"
)

// maxExplainText bounds the error text quoted in an explanation.
const maxExplainText = 300

// explainIMAP turns a step failure into a code, an explanation and a hint
// in lang. Failures that read the same for IMAP and SMTP (certificates,
// refused addresses, DNS) are explained by outgoing.Explain; where its hint
// names SMTP ports or hosts, the "imap.hint.<code>" text replaces it.
// Replies, timeouts and cancellations are explained here, naming IMAP's
// steps. host is the server's name, to name a preset's provider in a hint.
func explainIMAP(lang i18n.Lang, host string, ie *IMAPError) (code, explanation, hint string) {
	t := func(key string, args ...any) string { return i18n.T(lang, key, args...) }
	label := imapStepLabel(lang, ie.Step)
	if ie.Reply != nil {
		return explainIMAPReply(lang, host, ie, label)
	}
	err := ie.Err
	switch {
	case errors.Is(err, context.Canceled):
		return outgoing.CodeCanceled, t("explain.canceled", label), t("hint.canceled")
	case ie.Timeout:
		return explainIMAPTimeout(lang, ie.Step, label)
	case errors.Is(err, ErrLoginDisabled):
		return outgoing.CodeAuthNeedsTLS, t("imap.explain.login_disabled"), t("hint.auth_needs_tls")
	case errors.Is(err, ErrResponseTooLong), errors.Is(err, ErrSTARTTLSInjection), errors.Is(err, ErrPreauthClearText):
		return outgoing.CodeProtocolError, t("imap.explain.protocol_error", clipIMAP(err.Error(), maxExplainText)), t("imap.hint.protocol_error")
	case errors.Is(err, ErrNotIMAP):
		return outgoing.CodeProtocolError, t("imap.explain.protocol_error", clipIMAP(err.Error(), maxExplainText)), t("imap.hint.protocol_error")
	case errors.Is(err, ErrClosedBeforeGreeting):
		return outgoing.CodeConnectionClosed, t("explain.connection_closed", label), t("imap.hint.connection_closed")
	}

	code, explanation, hint = outgoing.Explain(string(lang), ie.Step, nil, err)
	switch code {
	case outgoing.CodeConnectionClosed:
		explanation = t("explain.connection_closed", label)
	case outgoing.CodeFailed:
		if err == nil {
			explanation = t("explain.failed.noerr", label)
		} else {
			explanation = t("explain.failed", label, clipIMAP(err.Error(), maxExplainText))
		}
	}
	if key := "imap.hint." + code; i18n.Has(key) {
		hint = t(key)
	}
	return code, explanation, hint
}

// explainIMAPReply explains a refusal the server sent.
func explainIMAPReply(lang i18n.Lang, host string, ie *IMAPError, label string) (string, string, string) {
	t := func(key string, args ...any) string { return i18n.T(lang, key, args...) }
	text := strings.ToLower(ie.Reply.Text)
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(text, w) {
				return true
			}
		}
		return false
	}
	switch ie.Step {
	case StepGreeting:
		return outgoing.CodeRejected, t("imap.explain.greeting_refused"), t("imap.hint.greeting_refused")
	case outgoing.StepSTARTTLS:
		return outgoing.CodeSTARTTLSMissing, t("explain.starttls_missing"), t("imap.hint.starttls_missing")
	case StepLogin:
		switch {
		case has("application-specific password", "app password", "application password", "пароль приложения", "пароля приложения"):
			return outgoing.CodeAppPasswordRequired, t("imap.explain.app_password_required"), t("imap.hint.app_password_required")
		case has("not enabled for imap", "imap access is disabled", "imap is disabled", "imap access disabled",
			"access rights to this service", "imap is not enabled"):
			return CodeIMAPDisabled, t("imap.explain.imap_disabled"), t("imap.hint.imap_disabled")
		case ie.Code == string(imap.ResponseCodeExpired):
			return CodePasswordExpired, t("imap.explain.password_expired"), t("imap.hint.password_expired")
		case ie.Code == string(imap.ResponseCodePrivacyRequired):
			return outgoing.CodeAuthNeedsTLS, t("imap.explain.login_disabled"), t("hint.auth_needs_tls")
		case ie.Code == string(imap.ResponseCodeUnavailable), ie.Code == string(imap.ResponseCodeInUse):
			return outgoing.CodeTemporaryFailure, t("explain.temporary_failure", label), t("hint.temporary_failure")
		}
		if p, ok := providerByIMAPHost(host); ok && p.AppPasswordHint {
			return outgoing.CodeAuthRejected, t("explain.auth_rejected"), t("imap.hint.auth_rejected.provider", p.Name)
		}
		return outgoing.CodeAuthRejected, t("explain.auth_rejected"), t("imap.hint.auth_rejected")
	}
	if ie.Code == string(imap.ResponseCodeUnavailable) || ie.Code == string(imap.ResponseCodeInUse) {
		return outgoing.CodeTemporaryFailure, t("explain.temporary_failure", label), t("hint.temporary_failure")
	}
	return outgoing.CodeRejected, t("explain.rejected", label), t("hint.rejected")
}

// explainIMAPTimeout explains a step that stalled.
func explainIMAPTimeout(lang i18n.Lang, step outgoing.Step, label string) (string, string, string) {
	t := func(key string, args ...any) string { return i18n.T(lang, key, args...) }
	code := outgoing.CodeTimeout
	switch step {
	case outgoing.StepDNS:
		return code, t("explain.timeout.dns"), t("hint.timeout.dns")
	case outgoing.StepTCP:
		return code, t("explain.timeout.tcp"), t("imap.hint.timeout.tcp")
	case outgoing.StepTLS:
		return code, t("explain.timeout.tls"), t("imap.hint.timeout.tls")
	case StepGreeting:
		return code, t("imap.explain.timeout.greeting"), t("imap.hint.timeout.greeting")
	}
	return code, t("explain.timeout.step", label), t("hint.timeout.step")
}

// imapStepLabel names a step in lang, as the protocol does where it can.
func imapStepLabel(lang i18n.Lang, s outgoing.Step) string {
	switch s {
	case outgoing.StepDNS:
		return "DNS"
	case outgoing.StepTCP:
		return "TCP"
	case outgoing.StepTLS:
		return "TLS"
	case outgoing.StepSTARTTLS:
		return "STARTTLS"
	case StepGreeting:
		return i18n.T(lang, "imap.step.greeting")
	case StepLogin:
		return "LOGIN"
	case StepList:
		return "LIST"
	}
	return clipIMAP(string(s), 40)
}

// providerByIMAPHost returns the preset whose IMAP host is host.
func providerByIMAPHost(host string) (Provider, bool) {
	host = normalizeDomain(host)
	for _, p := range Providers() {
		if strings.EqualFold(p.IMAP.Host, host) {
			return p, true
		}
	}
	return Provider{}, false
}

// imapNeedsNewSettings reports whether err is a cause that retrying cannot
// cure: a certificate problem, a refused address, an unknown host name, a
// server that is not IMAP or refuses LOGIN, bad input.
func imapNeedsNewSettings(err error) bool {
	if err == nil {
		return false
	}
	for _, target := range []error{ErrLoginDisabled, ErrNotIMAP, netguard.ErrBlocked, apperr.ErrInvalid} {
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

// clipIMAP shortens s to at most n runes, valid UTF-8.
func clipIMAP(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}
