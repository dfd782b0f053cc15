package main

import (
	"fmt"

	"github.com/loraft/loraft/checkpoint"
	"github.com/urfave/cli/v2"
)

// storeFlags are taken by every command that touches checkpoints. S3
// credentials come only from the environment or a file, never from flags
// (flags show in ps).
func storeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "store", EnvVars: []string{"LORAFT_STORE"}, Usage: "checkpoint store: a directory, or s3://bucket/prefix"},
		&cli.StringFlag{Name: "s3-endpoint", EnvVars: []string{"LORAFT_S3_ENDPOINT"}, Usage: "S3 endpoint host:port, HTTPS unless loopback (s3:// stores); http://host:port for plain HTTP"},
		&cli.BoolFlag{Name: "s3-tls", EnvVars: []string{"LORAFT_S3_TLS"}, Usage: "use HTTPS for a loopback --s3-endpoint too (other host:port endpoints always use it)"},
		&cli.StringFlag{Name: "s3-region", EnvVars: []string{"LORAFT_S3_REGION"}},
		&cli.PathFlag{Name: "s3-credentials-file", EnvVars: []string{"LORAFT_S3_CREDENTIALS_FILE"},
			Usage: "file with access_key= and secret_key= lines (else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"},
		&cli.DurationFlag{Name: "store-timeout", EnvVars: []string{"LORAFT_STORE_TIMEOUT"}, Value: checkpoint.DefaultCallTimeout,
			Usage: "deadline of each object-store call (a paused or unreachable store fails within it)"},
	}
}

// openStore opens --store; required says whether its absence is an error.
func openStore(c *cli.Context, required bool) (checkpoint.Store, error) {
	spec := c.String("store")
	if spec == "" {
		if required {
			return nil, fmt.Errorf("flag --store: a directory or s3://bucket/prefix is required")
		}
		return nil, nil
	}
	if d := c.Duration("store-timeout"); d <= 0 {
		return nil, fmt.Errorf("flag --store-timeout: %v is not a positive duration", d)
	}
	s, err := checkpoint.Open(c.Context, spec, checkpoint.S3Options{Endpoint: c.String("s3-endpoint"), Secure: c.Bool("s3-tls"),
		Region: c.String("s3-region"), CredentialsFile: c.Path("s3-credentials-file"), CallTimeout: c.Duration("store-timeout")})
	if err != nil {
		return nil, fmt.Errorf("flag --store: %w", err)
	}
	return s, nil
}
