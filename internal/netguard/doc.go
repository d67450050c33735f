// Package netguard owns the one dialer that mailsync uses for every
// connection to a host a user named: IMAP and SMTP servers today, any later
// check tomorrow. It exists so that a user cannot make the service connect to
// itself, to the network it runs in, or to a cloud metadata endpoint (SSRF).
//
// What it owns:
//   - [Classify], the decision of which addresses are not ordinary public
//     unicast: unspecified, loopback, private (RFC 1918 and IPv6 unique-local
//     fc00::/7, deprecated site-local fec0::/10), link-local, shared CGNAT
//     100.64.0.0/10, multicast, broadcast, benchmarking, documentation,
//     reserved (0/8, 192.0.0.0/24, 192.88.99.0/24, 240/4, IPv4-compatible
//     ::/96, 100::/64, 2001::/23, and all IPv6 outside 2000::/3) and cloud
//     metadata endpoints, for IPv4 and IPv6.
//   - [ParseAllowList], the syntax of MAILSYNC_ALLOW_HOSTS.
//   - [Dialer], which resolves, checks and connects.
//
// Invariants:
//   - Every address is checked in the net.Dialer Control hook, which runs
//     after the socket is created and before connect(2): a refused address
//     never sees a SYN. The hook checks the address actually being dialled,
//     not the one a lookup returned earlier, so DNS rebinding or a resolver
//     race cannot slip a private address through. [Dialer.Resolve] also
//     filters early, only for better error messages.
//   - net.Dialer is only ever given an IP literal, never a name, so it does
//     no resolution of its own.
//   - IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are the IPv4 address for
//     every decision. IPv6 zones are dropped before checking and dialling (an
//     allowed link-local address therefore cannot be reached: use a routable
//     one).
//   - Addresses that embed an IPv4 address are classified by it: NAT64
//     64:ff9b::/96 (last 32 bits), 6to4 2002::/16 (bits 16–47) and Teredo
//     2001::/32 (client address, the inverted last 32 bits). They are refused
//     (as [ClassNAT64], [Class6to4], [ClassTeredo]) when the embedded address
//     is refused and allowed when it is public. The local-use NAT64 prefix
//     64:ff9b:1::/48 is always refused ([ClassNAT64Local]): where its IPv4
//     address sits depends on the operator's prefix length, so it cannot be
//     read safely. NAT64 with a network-specific prefix cannot be recognised
//     at all; such a gateway must refuse private destinations itself.
//   - Cloud metadata addresses are matched exactly before the broader ranges,
//     so they are reported as [ClassMetadata] even where they sit inside, say,
//     link-local space; 168.63.129.16 (Azure's host endpoint) is refused
//     although it is public.
//   - The allow list (MAILSYNC_ALLOW_HOSTS, set by tests and on-premises
//     relays) is an escape hatch an admin owns: an address contained in any of
//     its prefixes is allowed whatever its class. It matches the address that
//     is dialled, not an IPv4 address embedded in it: allowing 10.0.0.0/8 does
//     not allow 64:ff9b::a00:1. Nothing is allowed by default.
//   - A refusal is a [*BlockedError] that matches [ErrBlocked] with errors.Is
//     and tells the admin how to allow the range.
//   - No package-level mutable state: the tables are built once and never
//     written; configuration is the [Dialer] value the caller passes down.
//
// This package imports only the standard library and no mailsync package.
package netguard
