package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/loraft/loraft/internal/pki"
	"github.com/urfave/cli/v2"
)

// insecureFlag lets a process serve, or dial, non-loopback addresses
// without TLS.
func insecureFlag() cli.Flag {
	return &cli.BoolFlag{Name: "insecure", EnvVars: []string{"LORAFT_INSECURE"},
		Usage: "serve or dial non-loopback addresses without TLS: anyone who reaches them may call everything, and anyone on the path may read or forge the traffic (never on a shared network; use `loraft certs init` and the --tls-* flags instead)"}
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

// plaintextDial refuses to dial non-loopback addresses (given by --flag)
// without TLS unless --insecure is given, and then warns on stderr: on a
// real network a plaintext client hands its requests, and the answers it
// trusts, to anyone on the path.
func plaintextDial(c *cli.Context, flag string, addrs []string) error {
	var open []string
	for _, a := range addrs {
		if !pki.IsLoopback(a) {
			open = append(open, a)
		}
	}
	if len(open) == 0 {
		return nil
	}
	if !c.Bool("insecure") {
		return fmt.Errorf("flag --%s: %s not loopback, and no TLS flags: give --tls-ca, --tls-cert and --tls-key (create them with `loraft certs init`), "+
			"or --insecure to connect without TLS anyway", flag, strings.Join(open, ", "))
	}
	slog.Warn("dialing WITHOUT TLS (--insecure): anyone on the path may read or forge the traffic", "flag", flag, "addrs", strings.Join(open, ", "))
	fmt.Fprintf(c.App.ErrWriter, "WARNING: --insecure: dialing --%s %s without TLS\n", flag, strings.Join(open, ","))
	return nil
}
