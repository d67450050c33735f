package mailbox

import (
	"github.com/mailsync/mailsync/internal/netguard"
	"strings"
	"unicode/utf8"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/outgoing"
)

// IMAPSettings are how to reach and log in to one IMAP server.
type IMAPSettings struct {
	Host string
	Port int
	// Security is ssl (implicit TLS, usually port 993), starttls (clear
	// text upgraded with STARTTLS, usually 143; required, never skipped)
	// or none (clear text, for a trusted server inside the network).
	Security outgoing.Security
	Login    string
	Password secret.Secret
}

// Limits of the settings' text fields.
const (
	imapMaxHostLen  = 253
	imapMaxLoginLen = 320
	imapMaxPassLen  = 1024
)

// Validate returns nil or an *apperr.Error of kind apperr.ErrInvalid whose
// Field is prefix plus the field at fault: "host", "port", "security",
// "login" or "password"; prefix is "" or, say, "imap.".
func (s IMAPSettings) Validate(prefix string) error {
	if code, msg := netguard.CheckHostSyntax(s.Host, "IMAP"); code != "" {
		return apperr.Invalid(prefix+"host", code, "%s", msg)
	}
	if s.Port < 1 || s.Port > 65535 {
		return apperr.Invalid(prefix+"port", "invalid_port", "the port must be a number from 1 to 65535 (usually 993 for ssl, 143 for starttls)")
	}
	switch s.Security {
	case outgoing.SecuritySSL, outgoing.SecuritySTARTTLS, outgoing.SecurityNone:
	default:
		return apperr.Invalid(prefix+"security", "invalid_choice", "security must be ssl, starttls or none")
	}
	switch {
	case s.Login == "":
		return apperr.Invalid(prefix+"login", "required", "a login is required")
	case len(s.Login) > imapMaxLoginLen:
		return apperr.Invalid(prefix+"login", "too_long", "the login is longer than %d bytes", imapMaxLoginLen)
	case !utf8.ValidString(s.Login) || imapHasControl(s.Login):
		return apperr.Invalid(prefix+"login", "invalid_login", "the login must be text without line breaks or control characters")
	}
	pw := s.Password.Reveal()
	switch {
	case pw == "":
		return apperr.Invalid(prefix+"password", "required", "a password is required")
	case len(pw) > imapMaxPassLen:
		return apperr.Invalid(prefix+"password", "too_long", "the password is longer than %d bytes", imapMaxPassLen)
	case !utf8.ValidString(pw) || strings.ContainsAny(pw, "\x00\r\n"):
		// LOGIN sends the password as an IMAP string: NUL and line
		// breaks cannot be in one, and only come from a paste error.
		return apperr.Invalid(prefix+"password", "invalid_password", "the password must be text without line breaks or NUL")
	}
	return nil
}

func imapHasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}
