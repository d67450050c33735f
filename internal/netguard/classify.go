package netguard

import (
	"net/netip"
	"slices"
)

// Class names why an address is refused; the empty Class is an ordinary
// public unicast address, which is allowed. The text of a Class is the word
// used in error messages ("a private address").
type Class string

// The classes [Classify] returns.
const (
	ClassPublic        Class = ""
	ClassInvalid       Class = "invalid"        // the zero netip.Addr
	ClassUnspecified   Class = "unspecified"    // 0.0.0.0, ::
	ClassLoopback      Class = "loopback"       // 127.0.0.0/8, ::1
	ClassPrivate       Class = "private"        // RFC 1918, fc00::/7, fec0::/10
	ClassLinkLocal     Class = "link-local"     // 169.254.0.0/16, fe80::/10
	ClassCGNAT         Class = "shared (CGNAT)" // 100.64.0.0/10 (RFC 6598)
	ClassMulticast     Class = "multicast"      // 224.0.0.0/4, ff00::/8
	ClassBroadcast     Class = "broadcast"      // 255.255.255.255
	ClassReserved      Class = "reserved"       // IANA special-purpose, unallocated, deprecated
	ClassDocumentation Class = "documentation"  // RFC 5737, 2001:db8::/32, 3fff::/20
	ClassBenchmarking  Class = "benchmarking"   // 198.18.0.0/15, 2001:2::/48
	ClassMetadata      Class = "cloud metadata" // 169.254.169.254, fd00:ec2::254, ...
	ClassNAT64         Class = "NAT64"          // 64:ff9b::/96 embedding a refused IPv4 address
	ClassNAT64Local    Class = "local-use NAT64"
	Class6to4          Class = "6to4"   // 2002::/16 embedding a refused IPv4 address
	ClassTeredo        Class = "Teredo" // 2001::/32 whose client is a refused IPv4 address

	// ClassULA is IPv6 unique-local fc00::/7, reported as private.
	ClassULA = ClassPrivate
)

// classPrefix is one row of a classification table.
type classPrefix struct {
	prefix netip.Prefix
	class  Class
}

func row(prefix string, class Class) classPrefix {
	return classPrefix{netip.MustParsePrefix(prefix), class}
}

func addrs(s ...string) []netip.Addr {
	a := make([]netip.Addr, len(s))
	for i, v := range s {
		a[i] = netip.MustParseAddr(v)
	}
	return a
}

// The tables are built once at start-up and never written.
var (
	// metadataAddrs are cloud metadata and host endpoints, matched exactly
	// before any range.
	metadataAddrs = addrs(
		"169.254.169.254", // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, Hetzner, ...
		"169.254.170.2",   // AWS ECS task metadata
		"169.254.170.23",  // AWS EKS Pod Identity
		"169.254.0.23",    // Tencent Cloud
		"100.100.100.200", // Alibaba Cloud
		"192.0.0.192",     // Oracle Cloud (legacy)
		"168.63.129.16",   // Azure WireServer: public, but the host's own endpoint
		"fd00:ec2::254",   // AWS IMDS over IPv6
		"fd00:ec2::23",    // AWS EKS Pod Identity over IPv6
	)

	ipv4Broadcast = netip.MustParseAddr("255.255.255.255")

	// ipv4Table lists the IPv4 special-purpose ranges (IANA registry, RFC
	// 6890) that a mail server never lives in. The rows do not overlap.
	ipv4Table = []classPrefix{
		row("0.0.0.0/8", ClassReserved), // "this network"; 0.0.0.0 itself is checked first
		row("10.0.0.0/8", ClassPrivate),
		row("100.64.0.0/10", ClassCGNAT),
		row("127.0.0.0/8", ClassLoopback),
		row("169.254.0.0/16", ClassLinkLocal),
		row("172.16.0.0/12", ClassPrivate),
		row("192.0.0.0/24", ClassReserved), // IETF protocol assignments
		row("192.0.2.0/24", ClassDocumentation),
		row("192.88.99.0/24", ClassReserved), // deprecated 6to4 relay anycast (RFC 7526)
		row("192.168.0.0/16", ClassPrivate),
		row("198.18.0.0/15", ClassBenchmarking),
		row("198.51.100.0/24", ClassDocumentation),
		row("203.0.113.0/24", ClassDocumentation),
		row("224.0.0.0/4", ClassMulticast),
		row("240.0.0.0/4", ClassReserved), // 255.255.255.255 is checked first
	}

	nat64Prefix  = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour    = netip.MustParsePrefix("2002::/16")
	teredoPrefix = netip.MustParsePrefix("2001::/32")

	// ipv6Table is searched in order after the embedding prefixes above; the
	// first match wins (2001:2::/48 lies inside 2001::/23).
	ipv6Table = []classPrefix{
		row("64:ff9b:1::/48", ClassNAT64Local), // RFC 8215; embedding depends on the operator's prefix length
		row("100::/64", ClassReserved),         // discard-only (RFC 6666)
		row("2001:2::/48", ClassBenchmarking),
		row("2001::/23", ClassReserved), // IETF protocol assignments (ORCHID, AMT, ...)
		row("2001:db8::/32", ClassDocumentation),
		row("3fff::/20", ClassDocumentation), // RFC 9637
		row("fc00::/7", ClassPrivate),        // unique-local (ClassULA)
		row("fe80::/10", ClassLinkLocal),
		row("fec0::/10", ClassPrivate), // deprecated site-local
		row("ff00::/8", ClassMulticast),
	}

	// globalUnicast is the only IPv6 space IANA allocates for global
	// unicast; everything outside it not matched above is reserved (this
	// covers IPv4-compatible ::/96, IPv4-translated ::ffff:0:0:0/96 and 5f00::/16).
	globalUnicast = netip.MustParsePrefix("2000::/3")
)

// Classify returns the class of addr, or "" ([ClassPublic]) when it is an
// ordinary public unicast address. The zone of an IPv6 address is ignored.
//
// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is classified as its IPv4
// address. NAT64 64:ff9b::/96, 6to4 2002::/16 and Teredo 2001::/32 embed an
// IPv4 address (Teredo's client address is the inverted last 32 bits): the
// address is refused as [ClassNAT64], [Class6to4] or [ClassTeredo] when the
// embedded address is refused, and public otherwise. The local-use NAT64
// prefix 64:ff9b:1::/48 is always [ClassNAT64Local]. Cloud metadata endpoints
// are [ClassMetadata], checked before the broader ranges that contain them.
func Classify(addr netip.Addr) Class {
	if !addr.IsValid() {
		return ClassInvalid
	}
	addr = addr.WithZone("").Unmap()
	if slices.Contains(metadataAddrs, addr) {
		return ClassMetadata
	}
	if addr.Is4() {
		return classify4(addr)
	}
	switch addr {
	case netip.IPv6Unspecified():
		return ClassUnspecified
	case netip.IPv6Loopback():
		return ClassLoopback
	}
	if v4, wrapper, ok := embeddedIPv4(addr); ok {
		if Classify(v4) != ClassPublic {
			return wrapper
		}
		return ClassPublic
	}
	for _, row := range ipv6Table {
		if row.prefix.Contains(addr) {
			return row.class
		}
	}
	if !globalUnicast.Contains(addr) {
		return ClassReserved
	}
	return ClassPublic
}

// classify4 classifies an IPv4 address that is not a metadata endpoint.
func classify4(addr netip.Addr) Class {
	switch addr {
	case netip.IPv4Unspecified():
		return ClassUnspecified
	case ipv4Broadcast:
		return ClassBroadcast
	}
	for _, row := range ipv4Table {
		if row.prefix.Contains(addr) {
			return row.class
		}
	}
	return ClassPublic
}

// embeddedIPv4 returns the IPv4 address that a NAT64 (well-known prefix),
// 6to4 or Teredo address embeds, with the class the wrapper is refused as.
// addr must be a zone-less IPv6 address that is not IPv4-mapped.
func embeddedIPv4(addr netip.Addr) (v4 netip.Addr, wrapper Class, ok bool) {
	b := addr.As16()
	switch {
	case nat64Prefix.Contains(addr): // RFC 6052 §2.2, /96: bits 96–127
		return netip.AddrFrom4([4]byte(b[12:16])), ClassNAT64, true
	case sixToFour.Contains(addr): // RFC 3056 §2: bits 16–47
		return netip.AddrFrom4([4]byte(b[2:6])), Class6to4, true
	case teredoPrefix.Contains(addr): // RFC 4380 §4: client address, bits 96–127 inverted
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}), ClassTeredo, true
	}
	return netip.Addr{}, ClassPublic, false
}
