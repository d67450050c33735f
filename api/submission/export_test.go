package submission

import "net"

// SetLoopback replaces the loopback test, so that a test on 127.0.0.1 can
// play a remote client.
func SetLoopback(s *Server, f func(net.Addr) bool) { s.loopback = f }

// OnClosing runs f once Shutdown or Close stopped accepting.
func OnClosing(s *Server, f func()) { s.onClosing = f }
