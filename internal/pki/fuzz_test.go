package pki

import (
	"net"
	"strings"
	"testing"
)

// FuzzCheckAddress: CheckAddress never panics, and accepts an address only when its host is
// literally one of the certificate's names: an IP SAN, a DNS SAN (case-insensitively), or one
// label under a wildcard SAN. The coordinators rely on it to keep a trainer from registering
// an address that is not its own.
func FuzzCheckAddress(f *testing.F) {
	ca, err := NewCA("fuzz", 0)
	if err != nil {
		f.Fatal(err)
	}
	l, err := ca.Issue(Identity{RoleTrainer, "t1"}, []string{"t1", "*.ring.example", "10.0.0.7", "::1"}, 0)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"t1:7500", "T1:1", "10.0.0.7:7500", "[::1]:7500", "a.ring.example:7500", "a.b.ring.example:7500",
		".ring.example:1", "*.ring.example:1", "t1.:7500", "10.0.0.7.:1", "[::ffff:10.0.0.7]:1", "t1", ":7500", "%00:1", "[fe80::1%eth0]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		err := CheckAddress(l.Cert, addr)
		if err != nil {
			return
		}
		host, _, serr := net.SplitHostPort(addr)
		if serr != nil {
			t.Fatalf("accepted %q, which is not host:port", addr)
		}
		if ip := net.ParseIP(host); ip != nil {
			for _, s := range l.Cert.IPAddresses {
				if s.Equal(ip) {
					return
				}
			}
			t.Fatalf("accepted %q: IP %s is not an IP SAN", addr, ip)
		}
		h := strings.ToLower(strings.TrimSuffix(host, "."))
		for _, n := range l.Cert.DNSNames {
			if h == n {
				return
			}
			if suffix, ok := strings.CutPrefix(n, "*"); ok {
				if label, ok := strings.CutSuffix(h, suffix); ok && label != "" && !strings.Contains(label, ".") {
					return
				}
			}
		}
		t.Fatalf("accepted %q: host %q is none of %v", addr, host, l.Cert.DNSNames)
	})
}
