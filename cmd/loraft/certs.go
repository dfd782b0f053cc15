package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/loraft/loraft/internal/bearer"
	"github.com/loraft/loraft/internal/pki"
	"github.com/urfave/cli/v2"
)

func certsCommand() *cli.Command {
	return &cli.Command{
		Name:  "certs",
		Usage: "create the certificates that authenticate every connection and carry each caller's role",
		Description: "Each certificate names its holder as a URI SAN loraft://<role>/<id>; the coordinators allow\n" +
			"viewers to read, operators to run sweeps and change membership, trainers to register, heartbeat\n" +
			"and report as themselves, and only coordinators onto raft. A certificate directory holds ca.pem,\n" +
			"cert.pem and key.pem: pass them as --tls-ca, --tls-cert and --tls-key.",
		Subcommands: []*cli.Command{
			{
				Name:  "init",
				Usage: "create a CA (OUT/ca) and a certificate per coordinator, trainer, operator and viewer (OUT/<role>-<id>)",
				Flags: []cli.Flag{
					&cli.PathFlag{Name: "out", Required: true, Usage: "directory to create the CA and the certificates in"},
					&cli.StringFlag{Name: "coordinator-ids", Value: "n1,n2,n3", Usage: "coordinator ids, comma-separated (each is also a DNS name in its certificate)"},
					&cli.StringFlag{Name: "coordinator-hosts", Value: "localhost,127.0.0.1", Usage: "further DNS names and IPs every coordinator certificate is valid for"},
					&cli.StringFlag{Name: "trainer-ids", Value: "trainer1,trainer2", Usage: "trainer ids, comma-separated (each is also a DNS name in its certificate); a trainer runs with --id set to it"},
					&cli.StringFlag{Name: "trainer-hosts", Value: "localhost,127.0.0.1", Usage: "further DNS names and IPs every trainer certificate is valid for (its all-reduce listener)"},
					&cli.StringFlag{Name: "operator-ids", Value: "operator", Usage: "operator ids, comma-separated"},
					&cli.StringFlag{Name: "viewer-ids", Value: "viewer", Usage: "viewer ids, comma-separated"},
				},
				Action: certsInit,
			},
			{
				Name:  "issue",
				Usage: "issue one more certificate from an existing CA",
				Flags: []cli.Flag{
					&cli.PathFlag{Name: "ca", Required: true, Usage: "the CA directory (OUT/ca of `certs init`, or OUT itself)"},
					&cli.StringFlag{Name: "role", Required: true, Usage: "coordinator, trainer, operator or viewer"},
					&cli.StringFlag{Name: "id", Required: true, Usage: "the holder's id (a coordinator's or trainer's --id)"},
					&cli.StringFlag{Name: "hosts", Usage: "DNS names and IPs the certificate is valid for, comma-separated (coordinators and trainers: the id is added)"},
					&cli.PathFlag{Name: "out", Required: true, Usage: "directory to write <role>-<id>/ in"},
				},
				Action: certsIssue,
			},
			{
				Name: "token",
				Usage: "print a new random dashboard token (for browsers and scripts) and its --http-tokens-file line; " +
					"the file keeps only the token's SHA-256, so keep the token itself",
				Flags: []cli.Flag{&cli.StringFlag{Name: "role", Value: "viewer", Usage: "viewer or operator"}},
				Action: func(c *cli.Context) error {
					token, line, err := bearer.New(c.String("role"))
					if err != nil {
						return fmt.Errorf("flag --role: %w", err)
					}
					fmt.Fprintf(c.App.Writer, "token: %s\ntokens-file line: %s\n", token, line)
					return nil
				},
			},
		},
	}
}

func certsInit(c *cli.Context) error {
	var reqs []pki.Request
	add := func(role pki.Role, idsFlag, hostsFlag string) {
		for _, id := range splitList(c.String(idsFlag)) {
			r := pki.Request{Identity: pki.Identity{Role: role, ID: id}}
			if hostsFlag != "" {
				r.Hosts = append([]string{id}, splitList(c.String(hostsFlag))...)
			}
			reqs = append(reqs, r)
		}
	}
	add(pki.RoleCoordinator, "coordinator-ids", "coordinator-hosts")
	add(pki.RoleTrainer, "trainer-ids", "trainer-hosts")
	add(pki.RoleOperator, "operator-ids", "")
	add(pki.RoleViewer, "viewer-ids", "")
	out := c.Path("out")
	if _, err := pki.Init(out, reqs); err != nil {
		return fmt.Errorf("certs init: %w", err)
	}
	fmt.Fprintf(c.App.Writer, "CA in %s (keep %s secret)\n", filepath.Join(out, "ca"), filepath.Join(out, "ca", pki.CAKeyFile))
	for _, r := range reqs {
		fmt.Fprintf(c.App.Writer, "%-38s %s\n", r.Identity, pki.LeafDir(out, r.Identity))
	}
	return nil
}

func certsIssue(c *cli.Context) error {
	role, err := pki.ParseRole(c.String("role"))
	if err != nil {
		return fmt.Errorf("flag --role: %w", err)
	}
	caDir := c.Path("ca")
	if _, err := os.Stat(filepath.Join(caDir, pki.CAKeyFile)); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(caDir, "ca", pki.CAKeyFile)); err == nil {
			caDir = filepath.Join(caDir, "ca")
		}
	}
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		return fmt.Errorf("flag --ca: %w", err)
	}
	r := pki.Request{Identity: pki.Identity{Role: role, ID: c.String("id")}, Hosts: splitList(c.String("hosts"))}
	if role == pki.RoleCoordinator || role == pki.RoleTrainer {
		r.Hosts = append([]string{r.Identity.ID}, r.Hosts...)
	}
	if err := r.Identity.Validate(); err != nil {
		return fmt.Errorf("flag --id: %w", err)
	}
	dir, err := pki.IssueTo(c.Path("out"), ca, r)
	if err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	fmt.Fprintf(c.App.Writer, "%s %s\n", r.Identity, dir)
	return nil
}
