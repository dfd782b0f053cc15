package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/loraft/loraft/internal/pki"
	"github.com/urfave/cli/v2"
)

// insecureFlag lets a coordinator or trainer serve non-loopback addresses
// without TLS.
func insecureFlag() cli.Flag {
	return &cli.BoolFlag{Name: "insecure", EnvVars: []string{"LORAFT_INSECURE"},
		Usage: "serve non-loopback addresses without TLS: anyone who reaches them may call everything (never on a shared network; use `loraft certs init` and the --tls-* flags instead)"}
}

// addrFlag is an address a process listens on or advertises, and the flag
// that set it.
type addrFlag struct{ flag, addr string }

// secureByDefault refuses to serve a non-loopback address without TLS
// unless --insecure is given, and then warns loudly (a WARN log line and a
// line on stderr). With TLS, --insecure is refused as a contradiction.
func secureByDefault(c *cli.Context, tlsOn bool, addrs []addrFlag) error {
	insecure := c.Bool("insecure")
	if tlsOn {
		if insecure {
			return fmt.Errorf("flag --insecure contradicts --tls-ca/--tls-cert/--tls-key: give one or the other")
		}
		return nil
	}
	var open []string
	for _, a := range addrs {
		if a.addr != "" && !pki.IsLoopback(a.addr) {
			open = append(open, fmt.Sprintf("--%s %s", a.flag, a.addr))
		}
	}
	if len(open) == 0 {
		return nil
	}
	if !insecure {
		return fmt.Errorf("%s: not loopback, and no TLS flags: give --tls-ca, --tls-cert and --tls-key (create them with `loraft certs init`), "+
			"or --insecure to serve without authentication anyway", strings.Join(open, ", "))
	}
	slog.Warn("serving WITHOUT TLS or authentication on non-loopback addresses (--insecure): anyone who reaches them may call every RPC", "addrs", strings.Join(open, ", "))
	fmt.Fprintf(c.App.ErrWriter, "WARNING: --insecure: %s serve without TLS or authentication; anyone who reaches them may launch, cancel or join anything\n", strings.Join(open, ", "))
	return nil
}
