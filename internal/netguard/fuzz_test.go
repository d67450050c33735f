package netguard

import (
	"net"
	"net/netip"
	"testing"
)

// The reference classifier below is written independently of Classify, in
// the plainest form: net.IP, one ordered list of *net.IPNet, byte slices for
// the embedded IPv4 addresses. FuzzClassify makes the two agree.

type refRow struct {
	network *net.IPNet
	class   Class
}

func refTable(rows ...refRow) []refRow { return rows }

func refNet(cidr string, class Class) refRow {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	return refRow{n, class}
}

var (
	refMetadata = []net.IP{
		net.ParseIP("169.254.169.254"), net.ParseIP("169.254.170.2"), net.ParseIP("169.254.170.23"),
		net.ParseIP("169.254.0.23"), net.ParseIP("100.100.100.200"), net.ParseIP("192.0.0.192"),
		net.ParseIP("168.63.129.16"), net.ParseIP("fd00:ec2::254"), net.ParseIP("fd00:ec2::23"),
	}

	// refRows is searched in order, IPv4 rows first; an IPv4-mapped address
	// is turned into 4 bytes before the search so only IPv4 rows can match it.
	refRows = refTable(
		refNet("0.0.0.0/32", ClassUnspecified),
		refNet("255.255.255.255/32", ClassBroadcast),
		refNet("0.0.0.0/8", ClassReserved),
		refNet("10.0.0.0/8", ClassPrivate),
		refNet("100.64.0.0/10", ClassCGNAT),
		refNet("127.0.0.0/8", ClassLoopback),
		refNet("169.254.0.0/16", ClassLinkLocal),
		refNet("172.16.0.0/12", ClassPrivate),
		refNet("192.0.0.0/24", ClassReserved),
		refNet("192.0.2.0/24", ClassDocumentation),
		refNet("192.88.99.0/24", ClassReserved),
		refNet("192.168.0.0/16", ClassPrivate),
		refNet("198.18.0.0/15", ClassBenchmarking),
		refNet("198.51.100.0/24", ClassDocumentation),
		refNet("203.0.113.0/24", ClassDocumentation),
		refNet("224.0.0.0/4", ClassMulticast),
		refNet("240.0.0.0/4", ClassReserved),

		refNet("::/128", ClassUnspecified),
		refNet("::1/128", ClassLoopback),
		refNet("64:ff9b:1::/48", ClassNAT64Local),
		refNet("100::/64", ClassReserved),
		refNet("2001:2::/48", ClassBenchmarking),
		refNet("2001:db8::/32", ClassDocumentation),
		refNet("3fff::/20", ClassDocumentation),
		refNet("fc00::/7", ClassPrivate),
		refNet("fe80::/10", ClassLinkLocal),
		refNet("fec0::/10", ClassPrivate),
		refNet("ff00::/8", ClassMulticast),
	)

	refNAT64  = refNet("64:ff9b::/96", "").network
	ref6to4   = refNet("2002::/16", "").network
	refTeredo = refNet("2001::/32", "").network
	refIETF   = refNet("2001::/23", "").network // after Teredo and 2001:2::/48
	refGlobal = refNet("2000::/3", "").network
)

// refClassify classifies a 4- or 16-byte address.
func refClassify(ip net.IP) Class {
	if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
		return ClassInvalid
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4 // IPv4, or IPv4-mapped IPv6
	}
	for _, m := range refMetadata {
		if m.Equal(ip) {
			return ClassMetadata
		}
	}
	if len(ip) == net.IPv6len {
		var embedded net.IP
		var wrapper Class
		switch {
		case refNAT64.Contains(ip):
			embedded, wrapper = net.IPv4(ip[12], ip[13], ip[14], ip[15]), ClassNAT64
		case ref6to4.Contains(ip):
			embedded, wrapper = net.IPv4(ip[2], ip[3], ip[4], ip[5]), Class6to4
		case refTeredo.Contains(ip):
			embedded, wrapper = net.IPv4(^ip[12], ^ip[13], ^ip[14], ^ip[15]), ClassTeredo
		}
		if embedded != nil {
			if refClassify(embedded.To4()) != "" {
				return wrapper
			}
			return ""
		}
	}
	for _, row := range refRows {
		if len(row.network.IP) == len(ip) && row.network.Contains(ip) {
			return row.class
		}
	}
	if len(ip) == net.IPv6len && (refIETF.Contains(ip) || !refGlobal.Contains(ip)) {
		return ClassReserved
	}
	return ""
}

// TestReferenceAgreesWithTables keeps the reference honest: it must agree
// with the hand-written expectations too, not only with Classify.
func TestReferenceAgreesWithTables(t *testing.T) {
	for _, tt := range refusedAddrs {
		addr := netip.MustParseAddr(tt.addr)
		if got := refClassify(addr.AsSlice()); got != tt.want {
			t.Errorf("refClassify(%v) = %q, want %q", addr, got, tt.want)
		}
	}
	for _, s := range publicAddrs {
		addr := netip.MustParseAddr(s)
		if got := refClassify(addr.AsSlice()); got != "" {
			t.Errorf("refClassify(%v) = %q, want public", addr, got)
		}
	}
}

// FuzzClassify checks Classify against refClassify, and that Check follows
// Classify, for any 4- or 16-byte address with or without a zone.
func FuzzClassify(f *testing.F) {
	for _, tt := range refusedAddrs {
		a := netip.MustParseAddr(tt.addr)
		f.Add(a.AsSlice(), a.Zone())
	}
	for _, s := range publicAddrs {
		a := netip.MustParseAddr(s)
		f.Add(a.AsSlice(), a.Zone())
	}
	for _, a := range refEdges() {
		f.Add(a.AsSlice(), "")
	}
	allowAll := &Dialer{Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
	var none Dialer
	f.Fuzz(func(t *testing.T, raw []byte, zone string) {
		addr, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		if addr.Is6() {
			addr = addr.WithZone(zone)
		}
		got := Classify(addr)
		if want := refClassify(net.IP(raw)); got != want {
			t.Fatalf("Classify(%v) = %q, reference says %q", addr, got, want)
		}
		if u := Classify(addr.WithZone("").Unmap()); u != got {
			t.Fatalf("Classify(%v) = %q but Classify(%v) = %q", addr, got, addr.WithZone("").Unmap(), u)
		}
		err := none.Check("fuzz.example", addr)
		if (err == nil) != (got == ClassPublic) {
			t.Fatalf("Check(%v) = %v, but Classify says %q", addr, err, got)
		}
		if err := allowAll.Check("fuzz.example", addr); err != nil {
			t.Fatalf("Check(%v) with everything allowed = %v, want nil", addr, err)
		}
	})
}

// refEdges returns, for every range of the reference table, the addresses
// just inside and just outside both ends; for IPv4 also their IPv4-mapped,
// NAT64, 6to4 and Teredo forms. Random inputs rarely land on these.
func refEdges() []netip.Addr {
	var edges []netip.Addr
	nets := []*net.IPNet{refNAT64, ref6to4, refTeredo, refIETF, refGlobal}
	for _, row := range refRows {
		nets = append(nets, row.network)
	}
	for _, m := range refMetadata {
		bits := 8 * len(m.To16())
		if m.To4() != nil {
			m, bits = m.To4(), 32
		}
		nets = append(nets, &net.IPNet{IP: m, Mask: net.CIDRMask(bits, bits)})
	}
	for _, n := range nets {
		first, _ := netip.AddrFromSlice(n.IP)
		lastIP := make(net.IP, len(n.IP))
		for i := range n.IP {
			lastIP[i] = n.IP[i] | ^n.Mask[i]
		}
		last, _ := netip.AddrFromSlice(lastIP)
		for _, a := range []netip.Addr{first.Prev(), first, last, last.Next()} {
			if !a.IsValid() {
				continue
			}
			edges = append(edges, a)
			if a.Is4() {
				b := a.As4()
				edges = append(edges,
					netip.AddrFrom16(a.As16()),
					netip.AddrFrom16([16]byte{0, 0x64, 0xff, 0x9b, 12: b[0], 13: b[1], 14: b[2], 15: b[3]}),
					netip.AddrFrom16([16]byte{0x20, 0x02, b[0], b[1], b[2], b[3], 15: 1}),
					netip.AddrFrom16([16]byte{0x20, 0x01, 12: ^b[0], 13: ^b[1], 14: ^b[2], 15: ^b[3]}),
				)
			}
		}
	}
	return edges
}
