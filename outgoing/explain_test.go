package outgoing_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/outgoing"
)

func TestExplain(t *testing.T) {
	reply := func(code int, enhanced, text string) *outgoing.Reply {
		return &outgoing.Reply{Code: code, Enhanced: enhanced, Text: text}
	}
	addrErr := func(addr, from string) error {
		return &outgoing.AddressError{Address: addr, From: from, Err: &textproto.Error{Code: 550}}
	}
	timeoutAt := func(step outgoing.Step) error {
		return &outgoing.StepError{Step: step, Timeout: true, Err: context.DeadlineExceeded}
	}
	leaf := &x509.Certificate{
		DNSNames:  []string{"mail.other.example", "smtp.other.example"},
		Subject:   pkix.Name{CommonName: "mail.other.example"},
		Issuer:    pkix.Name{CommonName: "Corp Internal CA"},
		NotBefore: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:  time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	selfSigned := &x509.Certificate{Subject: pkix.Name{CommonName: "mx.example"}, Issuer: pkix.Name{CommonName: "mx.example"}}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}

	cases := []struct {
		name     string
		step     outgoing.Step
		reply    *outgoing.Reply
		err      error
		wantCode string
		wantText []string // in the English explanation or hint
	}{
		// Replies at AUTH.
		{"535", outgoing.StepAuth, reply(535, "5.7.8", "Authentication credentials invalid"), nil, "auth_rejected", []string{"login or password", "app password", "Yandex", "Gmail", "Mail.ru"}},
		{"535 without enhanced code", outgoing.StepAuth, reply(535, "", "Error: authentication failed"), nil, "auth_rejected", nil},
		{"gmail 534 5.7.9", outgoing.StepAuth, reply(534, "5.7.9", "Application-specific password required."), nil, "app_password_required", []string{"Gmail", "app password"}},
		{"gmail wording in 535", outgoing.StepAuth, reply(535, "5.7.8", "Application-specific password required"), nil, "app_password_required", nil},
		{"microsoft 5.7.139", outgoing.StepAuth, reply(535, "5.7.139", "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."), nil, "smtp_auth_disabled", []string{"Microsoft 365", "Authenticated SMTP"}},
		{"microsoft by text", outgoing.StepAuth, reply(535, "", "5.7.139 Authentication unsuccessful, basic authentication is disabled."), nil, "smtp_auth_disabled", nil},
		{"454 at auth", outgoing.StepAuth, reply(454, "4.7.0", "Temporary authentication failure"), nil, "temporary_failure", []string{"AUTH", "try again"}},

		// Replies at MAIL FROM and RCPT.
		{"sender not owned", outgoing.StepMailFrom, reply(553, "5.7.1", "Sender address rejected: not owned by user alice@example.org"), addrErr("boss@example.org", "boss@example.org"), "sender_not_allowed", []string{"boss@example.org", "send as"}},
		{"sender by 5.7.1 alone", outgoing.StepMailFrom, reply(550, "5.7.1", "Rejected"), addrErr("boss@example.org", "boss@example.org"), "sender_not_allowed", []string{"boss@example.org"}},
		{"microsoft send as denied", outgoing.StepMailFrom, reply(554, "5.2.252", "SendAsDenied; alice@example.com not allowed to send as boss@example.com"), nil, "sender_not_allowed", []string{"this address"}},
		{"sender refused at rcpt", outgoing.StepRcpt, reply(553, "5.7.1", "<boss@example.org>: Sender address rejected: not owned by user alice"), addrErr("bob@example.net", "boss@example.org"), "sender_not_allowed", []string{"boss@example.org"}},
		{"mail.ru sender mismatch", outgoing.StepMailFrom, reply(550, "", "not local sender over smtp"), addrErr("boss@example.org", "boss@example.org"), "sender_not_allowed", nil},
		{"login needed", outgoing.StepMailFrom, reply(530, "5.7.0", "Authentication required"), nil, "auth_required", []string{"auth login"}},
		{"relay denied", outgoing.StepRcpt, reply(554, "5.7.1", "<bob@example.net>: Relay access denied"), addrErr("bob@example.net", "alice@example.org"), "relay_denied", []string{"bob@example.net"}},
		{"user unknown", outgoing.StepRcpt, reply(550, "5.1.1", "User unknown in virtual mailbox table"), addrErr("nobody@example.net", "alice@example.org"), "recipient_refused", []string{"nobody@example.net"}},
		{"recipient refused, plain 550", outgoing.StepRcpt, reply(550, "", "No"), nil, "recipient_refused", nil},
		{"greylisting", outgoing.StepRcpt, reply(451, "4.7.1", "Greylisted"), nil, "temporary_failure", []string{"RCPT TO"}},
		{"too many connections", outgoing.StepEHLO, reply(421, "4.7.0", "Too many connections"), nil, "temporary_failure", []string{"EHLO"}},
		{"message too large", outgoing.StepData, reply(552, "5.3.4", "Message size exceeds fixed limit"), nil, "message_too_large", nil},
		{"content refused", outgoing.StepData, reply(554, "5.6.0", "Spam"), nil, "rejected", []string{"DATA"}},
		{"greeting refused", outgoing.StepEHLO, reply(554, "", "No SMTP service here"), nil, "rejected", []string{"EHLO"}},
		{"reply inside the StepError", "", nil, &outgoing.StepError{Step: outgoing.StepAuth, Reply: reply(535, "5.7.8", "bad")}, "auth_rejected", nil},

		// Timeouts name the step.
		{"dns timeout", outgoing.StepDNS, nil, timeoutAt(outgoing.StepDNS), "timeout", []string{"DNS"}},
		{"tcp timeout", outgoing.StepTCP, nil, timeoutAt(outgoing.StepTCP), "timeout", []string{"firewall"}},
		{"tls timeout", outgoing.StepTLS, nil, timeoutAt(outgoing.StepTLS), "timeout", []string{"TLS", "starttls"}},
		{"greeting timeout", outgoing.StepEHLO, nil, timeoutAt(outgoing.StepEHLO), "timeout", []string{"greet", "465", "ssl"}},
		{"auth timeout", outgoing.StepAuth, nil, timeoutAt(outgoing.StepAuth), "timeout", []string{"stopped answering during AUTH"}},
		{"rcpt timeout", outgoing.StepRcpt, nil, timeoutAt(outgoing.StepRcpt), "timeout", []string{"during RCPT TO"}},
		{"timeout after the dot", outgoing.StepData, nil, &outgoing.StepError{Step: outgoing.StepData, Timeout: true, AfterData: true}, "timeout", []string{"may have been delivered"}},
		{"bare deadline error", outgoing.StepMailFrom, nil, fmt.Errorf("read: %w", os.ErrDeadlineExceeded), "timeout", []string{"MAIL FROM"}},
		{"lost after the dot", outgoing.StepData, nil, &outgoing.StepError{Step: outgoing.StepData, AfterData: true, Err: io.EOF}, "delivery_unknown", []string{"may have been delivered"}},
		{"cancelled", outgoing.StepAuth, nil, fmt.Errorf("%w (use of closed connection)", context.Canceled), "canceled", []string{"AUTH"}},

		// Network and names.
		{"connection refused", outgoing.StepTCP, nil, refused, "connection_refused", []string{"465", "587"}},
		{"connection closed", outgoing.StepEHLO, nil, io.EOF, "connection_closed", []string{"EHLO"}},
		{"connection reset", outgoing.StepData, nil, &net.OpError{Op: "write", Err: syscall.ECONNRESET}, "connection_closed", nil},
		{"unreachable", outgoing.StepTCP, nil, &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}, "connection_failed", []string{"unreachable"}},
		{"blocked name", outgoing.StepDNS, nil, &netguard.BlockedError{Host: "mx.example", Addr: netip.MustParseAddr("10.0.0.1"), Class: netguard.ClassPrivate}, "address_blocked", []string{"mx.example", "10.0.0.1", "private", "MAILSYNC_ALLOW_HOSTS"}},
		{"blocked literal", outgoing.StepTCP, nil, fmt.Errorf("dial: %w", &netguard.BlockedError{Host: "169.254.169.254", Addr: netip.MustParseAddr("169.254.169.254"), Class: netguard.ClassMetadata}), "address_blocked", []string{"169.254.169.254", "metadata"}},
		{"blocked unknown class", outgoing.StepTCP, nil, &netguard.BlockedError{Addr: netip.MustParseAddr("64:ff9b::a00:1"), Class: "brand new"}, "address_blocked", []string{"brand new"}},
		{"blocked sentinel", outgoing.StepTCP, nil, fmt.Errorf("check: %w", netguard.ErrBlocked), "address_blocked", []string{"MAILSYNC_ALLOW_HOSTS"}},
		{"no such host", outgoing.StepDNS, nil, fmt.Errorf("resolve: %w", &net.DNSError{Err: "no such host", Name: "smtp.yandex.rj", IsNotFound: true}), "dns_not_found", []string{"smtp.yandex.rj"}},
		{"dns server failure", outgoing.StepDNS, nil, &net.DNSError{Err: "server misbehaving", Name: "x"}, "dns_failed", []string{"server misbehaving"}},
		{"dns other error", outgoing.StepDNS, nil, errors.New("resolve x: no IP address"), "dns_failed", nil},

		// TLS.
		{"name mismatch", outgoing.StepTLS, nil, &tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: leaf, Host: "mx.example"}}, "tls_name_mismatch", []string{"mx.example", "mail.other.example", "smtp.other.example"}},
		{"name mismatch, no names", outgoing.StepSTARTTLS, nil, x509.HostnameError{Certificate: &x509.Certificate{}, Host: "mx.example"}, "tls_name_mismatch", []string{"mx.example"}},
		{"untrusted", outgoing.StepTLS, nil, &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{Cert: leaf}}, "tls_untrusted", []string{"Corp Internal CA", "MAILSYNC_EXTRA_CA_FILE"}},
		{"self-signed", outgoing.StepTLS, nil, x509.UnknownAuthorityError{Cert: selfSigned}, "tls_untrusted", []string{"self-signed"}},
		{"untrusted, no certificate", outgoing.StepTLS, nil, x509.UnknownAuthorityError{}, "tls_untrusted", nil},
		{"expired", outgoing.StepTLS, nil, &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Cert: leaf, Reason: x509.Expired}}, "tls_expired", []string{"2025-01-01", "clock"}},
		{"expired, no certificate", outgoing.StepTLS, nil, x509.CertificateInvalidError{Reason: x509.Expired}, "tls_expired", nil},
		{"other invalid", outgoing.StepTLS, nil, x509.CertificateInvalidError{Cert: leaf, Reason: x509.NotAuthorizedToSign}, "tls_invalid", nil},
		{"plain text on a TLS port", outgoing.StepTLS, nil, tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, "tls_not_spoken", []string{"starttls", "587"}},
		{"alert", outgoing.StepTLS, nil, tls.AlertError(40), "tls_failed", []string{"TLS 1.2"}},
		{"other tls error", outgoing.StepSTARTTLS, nil, errors.New("tls: server selected unsupported protocol version 301"), "tls_failed", nil},

		// mailsync's own refusals.
		{"no STARTTLS", outgoing.StepSTARTTLS, nil, outgoing.ErrSTARTTLSNotOffered, "starttls_missing", []string{"STARTTLS", "not sent"}},
		{"no AUTH", outgoing.StepAuth, nil, outgoing.ErrAuthNotOffered, "auth_not_offered", nil},
		{"no usable mechanism", outgoing.StepAuth, nil, outgoing.ErrNoAuthMechanism, "auth_mechanism_unsupported", []string{"PLAIN", "LOGIN"}},
		{"clear text AUTH", outgoing.StepAuth, nil, outgoing.ErrPlaintextAuth, "auth_needs_tls", nil},
		{"bad address", outgoing.StepMailFrom, nil, &outgoing.AddressError{Address: "a b@example.org", Err: outgoing.ErrInvalidAddress}, "invalid_address", []string{"a b@example.org"}},
		{"no recipients", outgoing.StepRcpt, nil, outgoing.ErrNoRecipients, "invalid_address", nil},
		{"broken connection", outgoing.StepMailFrom, nil, outgoing.ErrConnBroken, "connection_closed", nil},
		{"invalid settings", outgoing.StepDNS, nil, apperr.Invalid("port", "invalid_port", "bad port"), "invalid_settings", []string{"port"}},
		{"protocol error", outgoing.StepEHLO, nil, textproto.ProtocolError("short response: 2"), "protocol_error", []string{"short response"}},
		{"anything else", outgoing.StepEHLO, nil, errors.New("something odd"), "failed", []string{"EHLO", "something odd"}},
		{"nothing at all", outgoing.StepRcpt, nil, nil, "failed", []string{"RCPT TO"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, en, enHint := outgoing.Explain("en", c.step, c.reply, c.err)
			if code != c.wantCode {
				t.Errorf("Explain() code = %q, want %q (%s)", code, c.wantCode, en)
			}
			for _, w := range c.wantText {
				if !strings.Contains(en, w) && !strings.Contains(enHint, w) {
					t.Errorf("Explain() = %q / %q, want it to mention %q", en, enHint, w)
				}
			}
			ruCode, ru, ruHint := outgoing.Explain("ru", c.step, c.reply, c.err)
			if ruCode != code {
				t.Errorf("Explain(ru) code = %q, want %q as in English", ruCode, code)
			}
			for _, text := range []string{en, enHint, ru, ruHint} {
				if text == "" || strings.HasPrefix(text, "explain.") || strings.HasPrefix(text, "hint.") || strings.Contains(text, "%!") {
					t.Errorf("Explain() text %q is missing or malformed", text)
				}
			}
			if !hasCyrillic(ru) || !hasCyrillic(ruHint) || ru == en {
				t.Errorf("Explain(ru) = %q / %q, want Russian", ru, ruHint)
			}
		})
	}
}

func hasCyrillic(s string) bool {
	for _, r := range s {
		if unicode.Is(unicode.Cyrillic, r) {
			return true
		}
	}
	return false
}

// TestExplainOddInput feeds what a fuzzer would: nothing may panic and
// something must always be said.
func TestExplainOddInput(t *testing.T) {
	var nilStep *outgoing.StepError
	var nilAddr *outgoing.AddressError
	var nilDNS *net.DNSError
	var nilBlocked *netguard.BlockedError
	var nilHost *x509.HostnameError
	var nilApp *apperr.Error
	cases := []struct {
		lang  string
		step  outgoing.Step
		reply *outgoing.Reply
		err   error
	}{
		{"", "", nil, nil},
		{"xx;q=bad", "no such step", nil, nil},
		{"ru", "\xff\xfe", &outgoing.Reply{Code: -1, Text: "\xff"}, nil},
		{"en", outgoing.StepAuth, &outgoing.Reply{Code: 999999}, nil},
		{"en", outgoing.StepRcpt, &outgoing.Reply{}, nilAddr},
		{"en", outgoing.StepData, nil, nilStep},
		{"en", outgoing.StepDNS, nil, nilDNS},
		{"en", outgoing.StepDNS, nil, nilBlocked},
		{"en", outgoing.StepTLS, nil, nilHost},
		{"en", outgoing.StepDNS, nil, nilApp},
		{"ru", outgoing.StepTLS, nil, &tls.CertificateVerificationError{}},
		{"ru", outgoing.StepTLS, nil, x509.HostnameError{}},
		{"ru", outgoing.StepTLS, nil, x509.CertificateInvalidError{Reason: x509.Expired}},
		{"ru", outgoing.StepTLS, nil, &netguard.BlockedError{}},
		{"ru", outgoing.StepMailFrom, nil, &outgoing.AddressError{}},
		{"ru", outgoing.StepMailFrom, nil, errors.Join(nil, io.EOF, context.Canceled)},
		{"en", outgoing.Step(strings.Repeat("x", 10000)), nil, errors.New(strings.Repeat("é", 10000))},
	}
	for i, c := range cases {
		code, explanation, hint := outgoing.Explain(c.lang, c.step, c.reply, c.err)
		if code == "" || explanation == "" || hint == "" {
			t.Errorf("case %d: Explain() = %q, %q, %q, want all three", i, code, explanation, hint)
		}
		if len(explanation) > 2000 {
			t.Errorf("case %d: Explain() explanation is %d bytes, want it bounded", i, len(explanation))
		}
	}
}
