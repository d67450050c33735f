package netguard

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// MaxHostLen is the longest host name accepted (RFC 1035: 253 characters).
const MaxHostLen = 253

// CheckHostSyntax returns an error code and a message when h, as a user typed
// it into a form for a service ("SMTP", "IMAP"), is not a DNS name or an IP
// literal; "" when it is one. It says what is wrong in the terms people
// get wrong: a scheme, a port, brackets, spaces, an unencoded international
// name. Whether the name may be dialled is Dialer's business.
func CheckHostSyntax(h, service string) (code, msg string) {
	example := strings.ToLower(service) + ".example.com"
	switch {
	case h == "":
		return "required", "the " + service + " server's host name is required, e.g. " + example
	case strings.TrimSpace(h) != h || strings.ContainsAny(h, " \t"):
		return "invalid_host", "the host name must not contain spaces"
	case strings.Contains(h, "://"):
		return "invalid_host", "give the host name alone, without a scheme such as " + strings.ToLower(service) + "://"
	case strings.ContainsAny(h, "/?#@"):
		return "invalid_host", "give the host name alone, e.g. " + example
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
	if !ValidHostName(h) {
		for i := 0; i < len(h); i++ {
			if h[i] >= utf8.RuneSelf {
				return "invalid_host", "write an international host name in its xn-- (punycode) form"
			}
		}
		return "invalid_host", "the host name is not a valid DNS name"
	}
	return "", ""
}

// ValidHostName reports whether h is a host name of letters, digits,
// hyphens and underscores in dot-separated labels of 1 to 63 characters
// (RFC 1123, with the underscores real mail hosts use), with an optional
// trailing dot, and not all digits (a mistyped IP address).
func ValidHostName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > MaxHostLen {
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
