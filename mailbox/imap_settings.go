package mailbox

import (
	"net/netip"
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
	if code, msg := imapCheckHost(s.Host); code != "" {
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

// imapCheckHost returns an error code and message when h is not a DNS name
// or an IP literal, or "" when it is.
func imapCheckHost(h string) (code, msg string) {
	switch {
	case h == "":
		return "required", "the IMAP server's host name is required, e.g. imap.example.com"
	case strings.TrimSpace(h) != h || strings.ContainsAny(h, " \t"):
		return "invalid_host", "the host name must not contain spaces"
	case strings.Contains(h, "://"):
		return "invalid_host", "give the host name alone, without a scheme such as imaps://"
	case strings.ContainsAny(h, "/?#@"):
		return "invalid_host", "give the host name alone, e.g. imap.example.com"
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return "invalid_host", "an IPv6 address with a zone cannot be used; give a routable address"
		}
		return "", ""
	}
	if strings.HasPrefix(h, "[") {
		return "invalid_host", "give an IPv6 address without brackets and without a port"
	}
	if strings.Contains(h, ":") {
		return "invalid_host", "give the host name without a port: the port has its own field"
	}
	if !imapValidHostName(h) {
		for i := 0; i < len(h); i++ {
			if h[i] >= utf8.RuneSelf {
				return "invalid_host", "write an international host name in its xn-- (punycode) form"
			}
		}
		return "invalid_host", "the host name is not a valid DNS name"
	}
	return "", ""
}

// imapValidHostName reports whether h is a host name of letters, digits,
// hyphens and underscores in dot-separated labels of 1 to 63 characters,
// with an optional trailing dot, and not all digits (a mistyped IP
// address).
func imapValidHostName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > imapMaxHostLen {
		return false
	}
	allNumeric := true
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
				allNumeric = false
			default:
				return false
			}
		}
	}
	return !allNumeric
}

func imapHasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}
