package netguard

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode"
)

// AllowHostsEnv is the environment variable an admin sets to allow ranges
// that would otherwise be refused; cmd/mailsync reads it and passes
// [ParseAllowList]'s result down as [Dialer.Allow].
const AllowHostsEnv = "MAILSYNC_ALLOW_HOSTS"

// ParseAllowList parses the value of MAILSYNC_ALLOW_HOSTS: CIDR prefixes or
// single IP addresses separated by commas and/or white space, such as
// "127.0.0.0/8,::1,10.1.2.3". A single address becomes a /32 or /128 prefix,
// host bits after the prefix length are cleared ("10.1.2.3/8" is 10.0.0.0/8)
// and IPv4-mapped forms become IPv4 ("::ffff:10.0.0.0/104" is 10.0.0.0/8).
// Host names and IPv6 zones are not accepted. An empty list is nil. The error
// names the first bad item.
func ParseAllowList(s string) ([]netip.Prefix, error) {
	items := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	var list []netip.Prefix
	for _, item := range items {
		p, err := parseAllowItem(item)
		if err != nil {
			return nil, fmt.Errorf("parse %s: item %q is not an IP address or CIDR prefix: %w", AllowHostsEnv, item, err)
		}
		list = append(list, p)
	}
	return list, nil
}

func parseAllowItem(item string) (netip.Prefix, error) {
	if strings.Contains(item, "/") {
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return netip.Prefix{}, err
		}
		return unmapPrefix(p.Masked()), nil
	}
	a, err := netip.ParseAddr(item)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("IPv6 zone %q not allowed", a.Zone())
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// unmapPrefix turns an IPv4-mapped prefix of at least 96 bits into the IPv4
// prefix it covers; other prefixes are returned unchanged.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// allowed reports whether addr (zone-less, unmapped) lies in one of the
// prefixes. An IPv4 address also matches prefixes written in IPv4-mapped
// form, so a hand-built allow list needs no normalising.
func allowed(list []netip.Prefix, addr netip.Addr) bool {
	mapped := netip.AddrFrom16(addr.As16())
	for _, p := range list {
		if p.Contains(addr) || (addr.Is4() && p.Contains(mapped)) {
			return true
		}
	}
	return false
}
