package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
)

// AddrDialer connects to one resolved address; *Dialer is one.
type AddrDialer interface {
	DialAddr(ctx context.Context, host string, addr netip.AddrPort) (net.Conn, error)
}

// DialFirst connects to the first of addrs (in order) that answers on port,
// as the SMTP and IMAP checks' tcp step does. It returns the connection and
// the address it reached, or the first error with the addresses tried. It
// stops early when ctx ends.
func DialFirst(ctx context.Context, d AddrDialer, host string, addrs []netip.Addr, port int) (net.Conn, netip.AddrPort, []string, error) {
	var (
		tried    []string
		firstErr error
	)
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, uint16(port))
		c, err := d.DialAddr(ctx, host, ap)
		if err == nil {
			return c, ap, tried, nil
		}
		tried = append(tried, ap.String())
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if firstErr == nil {
		firstErr = errors.New("no address to connect to")
	}
	return nil, netip.AddrPort{}, tried, firstErr
}

// JoinAddrs lists addresses for a report line: "a, b, c".
func JoinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
