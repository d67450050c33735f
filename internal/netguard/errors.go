package netguard

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrBlocked is matched (with errors.Is) by every refusal.
var ErrBlocked = errors.New("address not allowed")

// BlockedError is the refusal of one address. It matches [ErrBlocked].
type BlockedError struct {
	Host  string     // the name that was resolved, or the IP literal given
	Addr  netip.Addr // the refused address, without zone
	Class Class      // why it is refused; never ""
}

// Error explains the refusal and how to lift it, e.g.
//
//	host "mx.example" resolves to a private address (10.0.0.1); an admin can allow it with MAILSYNC_ALLOW_HOSTS
//	address 10.0.0.1 is a private address; an admin can allow it with MAILSYNC_ALLOW_HOSTS
func (e *BlockedError) Error() string {
	what := article(e.Class) + " address"
	var embeds netip.Addr
	if a := e.Addr.WithZone(""); a.Is6() && !a.Is4In6() {
		if v4, wrapper, ok := embeddedIPv4(a); ok && wrapper == e.Class {
			embeds = v4
			what += " embedding " + article(Classify(v4)) + " address"
		}
	}
	const hint = "; an admin can allow it with " + AllowHostsEnv
	if e.isLiteral() {
		if embeds.IsValid() {
			return fmt.Sprintf("address %s is %s (%s)%s", e.Addr, what, embeds, hint)
		}
		return fmt.Sprintf("address %s is %s%s", e.Addr, what, hint)
	}
	if embeds.IsValid() {
		return fmt.Sprintf("host %q resolves to %s (%s, embedding %s)%s", e.Host, what, e.Addr, embeds, hint)
	}
	return fmt.Sprintf("host %q resolves to %s (%s)%s", e.Host, what, e.Addr, hint)
}

// Unwrap makes errors.Is(err, ErrBlocked) true.
func (e *BlockedError) Unwrap() error { return ErrBlocked }

// isLiteral reports whether the host was given as an IP address rather than
// a name.
func (e *BlockedError) isLiteral() bool {
	if e.Host == "" {
		return true
	}
	_, err := netip.ParseAddr(e.Host)
	return err == nil
}

// article prefixes the class word with "a" or "an".
func article(c Class) string {
	if c == "" {
		return "a public"
	}
	switch c[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an " + string(c)
	}
	return "a " + string(c)
}
