package netguard_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/mailsync/mailsync/internal/netguard"
)

func ExampleClassify() {
	for _, s := range []string{"8.8.8.8", "10.0.0.1", "::ffff:127.0.0.1", "169.254.169.254", "64:ff9b::a00:1", "64:ff9b::808:808"} {
		fmt.Printf("%s: %q\n", s, netguard.Classify(netip.MustParseAddr(s)))
	}
	// Output:
	// 8.8.8.8: ""
	// 10.0.0.1: "private"
	// ::ffff:127.0.0.1: "loopback"
	// 169.254.169.254: "cloud metadata"
	// 64:ff9b::a00:1: "NAT64"
	// 64:ff9b::808:808: ""
}

func ExampleParseAllowList() {
	allow, err := netguard.ParseAllowList("127.0.0.0/8, ::1 10.1.2.3")
	fmt.Println(allow, err)
	// Host names are not accepted; the error names the item:
	// parse MAILSYNC_ALLOW_HOSTS: item "relay.internal" is not an IP address or CIDR prefix: ...
	_, err = netguard.ParseAllowList("10.0.0.0/8,relay.internal")
	fmt.Println(strings.Contains(err.Error(), `item "relay.internal"`))
	// Output:
	// [127.0.0.0/8 ::1/128 10.1.2.3/32] <nil>
	// true
}

func ExampleDialer_Check() {
	var d netguard.Dialer
	fmt.Println(d.Check("mx.example", netip.MustParseAddr("10.0.0.1")))
	fmt.Println(d.Check("10.0.0.1", netip.MustParseAddr("10.0.0.1")))
	// Output:
	// host "mx.example" resolves to a private address (10.0.0.1); an admin can allow it with MAILSYNC_ALLOW_HOSTS
	// address 10.0.0.1 is a private address; an admin can allow it with MAILSYNC_ALLOW_HOSTS
}

// The Dialer is built once from configuration and its DialContext handed to
// the SMTP and IMAP clients in place of net.Dialer's.
func ExampleDialer() {
	allow, err := netguard.ParseAllowList(os.Getenv(netguard.AllowHostsEnv))
	if err != nil {
		fmt.Println(err)
		return
	}
	d := &netguard.Dialer{Allow: allow}
	var dial func(ctx context.Context, network, address string) (net.Conn, error) = d.DialContext
	_ = dial
}
