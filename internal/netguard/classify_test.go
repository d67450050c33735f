package netguard

import (
	"net/netip"
	"testing"
)

// refusedAddrs covers every refused range, the edges of the larger ones,
// cloud metadata endpoints and the IPv4-mapped, IPv4-compatible, NAT64, 6to4
// and Teredo forms of refused IPv4 addresses. The dial tests dial each one.
var refusedAddrs = []struct {
	addr string
	want Class
}{
	// IPv4
	{"0.0.0.0", ClassUnspecified},
	{"0.1.2.3", ClassReserved},
	{"0.255.255.255", ClassReserved},
	{"10.0.0.1", ClassPrivate},
	{"10.255.255.255", ClassPrivate},
	{"100.64.0.1", ClassCGNAT},
	{"100.127.255.254", ClassCGNAT},
	{"100.100.100.200", ClassMetadata},
	{"127.0.0.1", ClassLoopback},
	{"127.0.53.53", ClassLoopback},
	{"127.255.255.254", ClassLoopback},
	{"169.254.0.1", ClassLinkLocal},
	{"169.254.255.255", ClassLinkLocal},
	{"169.254.169.254", ClassMetadata},
	{"169.254.170.2", ClassMetadata},
	{"169.254.170.23", ClassMetadata},
	{"169.254.0.23", ClassMetadata},
	{"168.63.129.16", ClassMetadata},
	{"172.16.0.1", ClassPrivate},
	{"172.31.255.254", ClassPrivate},
	{"192.0.0.1", ClassReserved},
	{"192.0.0.192", ClassMetadata},
	{"192.0.2.1", ClassDocumentation},
	{"192.88.99.1", ClassReserved},
	{"192.168.0.1", ClassPrivate},
	{"192.168.255.255", ClassPrivate},
	{"198.18.0.1", ClassBenchmarking},
	{"198.19.255.254", ClassBenchmarking},
	{"198.51.100.7", ClassDocumentation},
	{"203.0.113.9", ClassDocumentation},
	{"224.0.0.1", ClassMulticast},
	{"239.255.255.250", ClassMulticast},
	{"240.0.0.1", ClassReserved},
	{"255.255.255.254", ClassReserved},
	{"255.255.255.255", ClassBroadcast},

	// IPv6
	{"::", ClassUnspecified},
	{"::1", ClassLoopback},
	{"fc00::1", ClassPrivate},
	{"fd12:3456:789a::1", ClassULA},
	{"fd00:ec2::254", ClassMetadata},
	{"fd00:ec2::23", ClassMetadata},
	{"fe80::1", ClassLinkLocal},
	{"fe80::1%eth0", ClassLinkLocal},
	{"febf:ffff::1", ClassLinkLocal},
	{"fec0::1", ClassPrivate},
	{"ff02::1", ClassMulticast},
	{"ff05::1:3", ClassMulticast},
	{"ff0e::1", ClassMulticast},
	{"2001:db8::1", ClassDocumentation},
	{"3fff::1", ClassDocumentation},
	{"100::1", ClassReserved},
	{"2001:2::1", ClassBenchmarking},
	{"2001:10::1", ClassReserved},
	{"2001:1::1", ClassReserved},
	{"5f00::1", ClassReserved},
	{"4000::1", ClassReserved},
	{"8000::1", ClassReserved},

	// IPv4-mapped: classified as the IPv4 address.
	{"::ffff:127.0.0.1", ClassLoopback},
	{"::ffff:10.0.0.1", ClassPrivate},
	{"::ffff:169.254.169.254", ClassMetadata},
	{"::ffff:0.0.0.0", ClassUnspecified},
	{"::ffff:100.64.0.1", ClassCGNAT},
	{"::ffff:192.168.1.1", ClassPrivate},
	{"::ffff:224.0.0.1", ClassMulticast},
	{"::ffff:255.255.255.255", ClassBroadcast},
	{"::ffff:7f00:1", ClassLoopback},

	// IPv4-compatible (deprecated) and IPv4-translated: reserved.
	{"::127.0.0.1", ClassReserved},
	{"::10.0.0.1", ClassReserved},
	{"::8.8.8.8", ClassReserved},
	{"::ffff:0:7f00:1", ClassReserved},

	// NAT64, 6to4 and Teredo embedding a refused IPv4 address.
	{"64:ff9b::7f00:1", ClassNAT64},
	{"64:ff9b::127.0.0.1", ClassNAT64},
	{"64:ff9b::a00:1", ClassNAT64},
	{"64:ff9b::c0a8:101", ClassNAT64},
	{"64:ff9b::a9fe:a9fe", ClassNAT64}, // 169.254.169.254
	{"64:ff9b::", ClassNAT64},          // 0.0.0.0
	{"64:ff9b:1::808:808", ClassNAT64Local},
	{"64:ff9b:1:ffff::1", ClassNAT64Local},
	{"64:ff9b:0:0:1::808:808", ClassReserved}, // in 64:ff9b::/32 but not the /96
	{"2002:7f00:1::", Class6to4},
	{"2002:7f00:1::1", Class6to4},
	{"2002:c0a8:101::1", Class6to4},
	{"2002:a9fe:a9fe::1", Class6to4},
	{"2002:a00:1:1::1", Class6to4},
	// Teredo: server 65.54.227.120, client 192.168.1.1 (inverted 3f57:fefe).
	{"2001:0:4136:e378:8000:63bf:3f57:fefe", ClassTeredo},
	// Teredo: client 127.0.0.1 (inverted 80ff:fffe).
	{"2001:0:4136:e378:8000:63bf:80ff:fffe", ClassTeredo},
	// Teredo: client 169.254.169.254 (inverted 5601:5601).
	{"2001::5601:5601", ClassTeredo},
}

// publicAddrs are ordinary public addresses, many just outside a refused
// range; they must be allowed.
var publicAddrs = []string{
	"8.8.8.8",
	"1.1.1.1",
	"1.0.0.1",
	"9.9.9.9",
	"77.88.21.158",
	"11.0.0.1",
	"100.63.255.255",
	"100.128.0.0",
	"126.255.255.255",
	"128.0.0.1",
	"168.63.129.17",
	"169.253.255.255",
	"169.255.0.1",
	"172.15.255.255",
	"172.32.0.0",
	"192.0.1.1",
	"192.0.3.1",
	"192.167.255.255",
	"192.169.0.0",
	"198.17.255.255",
	"198.20.0.0",
	"223.255.255.255",
	"::ffff:8.8.8.8",
	"2a00:1450::1",
	"2a00:1450:4001:82b::200e",
	"2606:4700:4700::1111",
	"2001:4860:4860::8888",
	"2001:200::1",
	"2001:db7:ffff::1",
	"2001:db9::1",
	"3fff:1000::1",
	"2620:4f:8000::1",
	"3ffe::1",
	"2a00:1450::1%eth0",
	"64:ff9b::808:808",                     // NAT64 of 8.8.8.8
	"64:ff9b::8.8.8.8",                     // same, dotted
	"2002:808:808::1",                      // 6to4 of 8.8.8.8
	"2001:0:4136:e378:8000:63bf:f7f7:f7f7", // Teredo, client 8.8.8.8
}

func TestClassifyRefused(t *testing.T) {
	if len(refusedAddrs) < 40 {
		t.Fatalf("only %d refused addresses in the table, want at least 40", len(refusedAddrs))
	}
	for _, tt := range refusedAddrs {
		addr := netip.MustParseAddr(tt.addr)
		if got := Classify(addr); got != tt.want {
			t.Errorf("Classify(%v) = %q, want %q", addr, got, tt.want)
		}
	}
}

func TestClassifyPublic(t *testing.T) {
	for _, s := range publicAddrs {
		addr := netip.MustParseAddr(s)
		if got := Classify(addr); got != ClassPublic {
			t.Errorf("Classify(%v) = %q, want public", addr, got)
		}
	}
}

func TestClassifyInvalid(t *testing.T) {
	if got := Classify(netip.Addr{}); got != ClassInvalid {
		t.Errorf("Classify(netip.Addr{}) = %q, want %q", got, ClassInvalid)
	}
}

// TestClassifyForms checks that the mapped, zoned and 16-byte forms of an
// address are classified alike.
func TestClassifyForms(t *testing.T) {
	for _, tt := range refusedAddrs {
		addr := netip.MustParseAddr(tt.addr)
		forms := []netip.Addr{addr.WithZone(""), addr.Unmap()}
		if addr.Is4() {
			forms = append(forms, netip.AddrFrom16(addr.As16()))
		} else {
			forms = append(forms, addr.WithZone("en0"))
		}
		for _, f := range forms {
			if got := Classify(f); got != tt.want {
				t.Errorf("Classify(%v) = %q, want %q (as %v)", f, got, tt.want, addr)
			}
		}
	}
}

// TestTablesDisjoint guards the claim that the IPv4 rows do not overlap, so
// their order does not matter.
func TestTablesDisjoint(t *testing.T) {
	for i, a := range ipv4Table {
		for _, b := range ipv4Table[i+1:] {
			if a.prefix.Overlaps(b.prefix) {
				t.Errorf("ipv4Table rows %v and %v overlap", a.prefix, b.prefix)
			}
		}
	}
	for _, m := range metadataAddrs {
		if m != m.Unmap() || m.Zone() != "" {
			t.Errorf("metadata address %v is not in canonical form", m)
		}
	}
}

func TestCheck(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		allow []netip.Prefix
		addr  string
		want  Class // "" = allowed
	}{
		{nil, "8.8.8.8", ""},
		{nil, "127.0.0.1", ClassLoopback},
		{nil, "::ffff:127.0.0.1", ClassLoopback},
		{[]netip.Prefix{p("127.0.0.0/8")}, "127.0.0.1", ""},
		{[]netip.Prefix{p("127.0.0.0/8")}, "127.255.255.254", ""},
		{[]netip.Prefix{p("127.0.0.0/8")}, "::ffff:127.0.0.1", ""},
		{[]netip.Prefix{p("127.0.0.0/8")}, "::1", ClassLoopback},
		{[]netip.Prefix{p("127.0.0.0/8")}, "10.0.0.1", ClassPrivate},
		{[]netip.Prefix{p("127.0.0.0/8")}, "64:ff9b::7f00:1", ClassNAT64},
		{[]netip.Prefix{p("::1/128")}, "::1", ""},
		{[]netip.Prefix{p("10.1.2.3/32")}, "10.1.2.3", ""},
		{[]netip.Prefix{p("10.1.2.3/32")}, "10.1.2.4", ClassPrivate},
		{[]netip.Prefix{p("::ffff:10.0.0.0/104")}, "10.9.9.9", ""}, // mapped prefix, not normalised
		{[]netip.Prefix{p("::ffff:10.0.0.0/104")}, "::ffff:10.9.9.9", ""},
		{[]netip.Prefix{p("64:ff9b::/96")}, "64:ff9b::7f00:1", ""},
		{[]netip.Prefix{p("fe80::/10")}, "fe80::1%eth0", ""},
		{[]netip.Prefix{p("fd00::/8")}, "fd00:ec2::254", ""}, // allow wins over metadata
		{[]netip.Prefix{p("0.0.0.0/0"), p("::/0")}, "169.254.169.254", ""},
		{[]netip.Prefix{p("0.0.0.0/0")}, "::1", ClassLoopback},
	}
	for _, tt := range tests {
		d := &Dialer{Allow: tt.allow}
		addr := netip.MustParseAddr(tt.addr)
		err := d.Check("mx.example", addr)
		var got Class
		if err != nil {
			be, ok := err.(*BlockedError)
			if !ok {
				t.Errorf("Allow %v: Check(%v) = %v (%T), want *BlockedError or nil", tt.allow, addr, err, err)
				continue
			}
			got = be.Class
			if be.Addr != addr.WithZone("") || be.Host != "mx.example" {
				t.Errorf("Allow %v: Check(%v) error = %+v, want Host mx.example, Addr %v", tt.allow, addr, be, addr.WithZone(""))
			}
		}
		if got != tt.want {
			t.Errorf("Allow %v: Check(%v) class = %q, want %q", tt.allow, addr, got, tt.want)
		}
	}
	if err := (&Dialer{}).Check("x", netip.Addr{}); err == nil {
		t.Error("Check(invalid address) = nil, want refusal")
	}
}
