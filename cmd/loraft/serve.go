package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/loraft/loraft/internal/bearer"
	"github.com/loraft/loraft/serve"
	"github.com/loraft/loraft/trainer"
	"github.com/urfave/cli/v2"
)

func serveCommand() *cli.Command {
	d, h := serve.DefaultConfig(), serve.DefaultHTTPOptions()
	flags := []cli.Flag{
		&cli.PathFlag{Name: "adapter", Usage: "adapter directory to serve (`loraft adapter pull`'s output)"},
		&cli.StringFlag{Name: "sweep", Usage: "serve this sweep's best adapter (with --coordinators and the store flags), switching when a better one appears"},
		&cli.StringFlag{Name: "coordinators", EnvVars: []string{"LORAFT_COORDINATORS"}, Usage: "with --sweep: the coordinators' gRPC API addresses"},
		&cli.DurationFlag{Name: "poll", Value: 30 * time.Second, Usage: "with --sweep: how often to look for a better adapter"},
		&cli.PathFlag{Name: "weights", Usage: "base model.safetensors (default: the path the adapter recorded)"},
		&cli.StringFlag{Name: "device", Value: "cpu"},
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8080", Usage: "HTTP JSON address (POST /v1/classify, /healthz, /readyz, /metrics); empty for none"},
		&cli.StringFlag{Name: "grpc-listen", Usage: "gRPC address (loraft.serve.v1.Classifier); empty for none"},
		&cli.IntFlag{Name: "max-batch", Value: d.MaxBatch, Usage: "most texts in one forward pass"},
		&cli.DurationFlag{Name: "max-wait", Value: d.MaxWait, Usage: "how long a text waits for others to share its batch"},
		&cli.IntFlag{Name: "workers", Value: d.Workers, Usage: "batches run at once on the one model"},
		&cli.IntFlag{Name: "queue", Value: d.QueueTexts, Usage: "texts that may wait for a batch; past it requests get 429 / RESOURCE_EXHAUSTED"},
		&cli.IntFlag{Name: "max-texts", Value: d.MaxTexts, Usage: "most texts in one request"},
		&cli.IntFlag{Name: "max-text-bytes", Value: d.MaxTextBytes, Usage: "longer texts are cut (and the cut reported) before tokenizing"},
		&cli.Int64Flag{Name: "max-body", Value: h.MaxBodyBytes, Usage: "largest request body in bytes"},
		&cli.DurationFlag{Name: "timeout", Value: h.Timeout, Usage: "longest a request may take"},
		&cli.Float64Flag{Name: "review-below", Value: -1, Usage: "send predictions under this confidence to review (default: the threshold chosen on the adapter's validation split)"},
		&cli.StringFlag{Name: "review-labels", Value: "Suicidal", Usage: "labels always sent to review, comma-separated (empty for none)"},
		&cli.PathFlag{Name: "http-tls-cert", Usage: "serve both fronts over TLS with this certificate (PEM)"},
		&cli.PathFlag{Name: "http-tls-key", Usage: "the certificate's private key (PEM)"},
		&cli.PathFlag{Name: "http-client-ca", Usage: "accept client certificates signed by this CA (PEM) as credentials"},
		&cli.PathFlag{Name: "tokens-file", EnvVars: []string{"LORAFT_SERVE_TOKENS_FILE"}, Usage: "bearer tokens accepted, as one sha256 (hex) per line"},
		insecureFlag(),
	}
	flags = append(append(flags, storeFlags()...), tlsFlags()...)
	return &cli.Command{
		Name:  "serve",
		Usage: "a classification service: HTTP JSON and gRPC, dynamic batching, human-review routing",
		Description: "Serves one adapter (--adapter) or a sweep's best (--sweep), answering each text with its label, calibrated\n" +
			"confidence, every class probability, and needs_review with the rules that fired.\n\n" + disclaimer,
		Flags:  flags,
		Action: serveAction,
	}
}

func serveAction(c *cli.Context) error {
	cfg := serve.DefaultConfig()
	cfg.MaxBatch, cfg.MaxWait, cfg.Workers, cfg.QueueTexts = c.Int("max-batch"), c.Duration("max-wait"), c.Int("workers"), c.Int("queue")
	cfg.MaxTexts, cfg.MaxTextBytes = c.Int("max-texts"), c.Int("max-text-bytes")
	cfg.Review.Below, cfg.Review.Labels = c.Float64("review-below"), splitList(c.String("review-labels"))
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("serve flags: %w", err)
	}
	o := serve.ServerOptions{HTTPAddr: c.String("listen"), GRPCAddr: c.String("grpc-listen"), HTTP: serve.DefaultHTTPOptions()}
	o.HTTP.MaxBodyBytes, o.HTTP.Timeout = c.Int64("max-body"), c.Duration("timeout")
	if o.HTTP.MaxBodyBytes < 1 || o.HTTP.Timeout <= 0 {
		return errors.New("flags --max-body and --timeout must be positive")
	}
	var err error
	if o.TLS, o.HTTP.Tokens, err = serveCredentials(c, o.HTTPAddr, o.GRPCAddr); err != nil {
		return err
	}
	device, err := trainer.ParseDevice(c.String("device"))
	if err != nil {
		return fmt.Errorf("flag --device: %w", err)
	}
	open := func(dir, name string) (*serve.Model, error) {
		return serve.OpenAdapter(dir, c.Path("weights"), name, device)
	}

	svc, err := serve.New(cfg, nil)
	if err != nil {
		return err
	}
	defer svc.Close()
	switch adapter, sweep := c.Path("adapter"), c.String("sweep"); {
	case (adapter == "") == (sweep == ""):
		return errors.New("give --adapter DIR or --sweep NAME (with --coordinators), one of them")
	case adapter != "":
		m, err := open(adapter, filepath.Base(adapter))
		if err != nil {
			return err
		}
		svc.SetModel(m)
	default:
		store, err := openStore(c, true)
		if err != nil {
			return err
		}
		cl, err := dialCoordinators(c)
		if err != nil {
			return err
		}
		defer cl.Close()
		src := &serve.SweepSource{Coordinators: cl, Store: store, Sweep: sweep}
		work, err := os.MkdirTemp("", "loraft-serve-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(work)
		go serve.Follow(c.Context, svc, src, open, work, c.Duration("poll"))
	}
	o.Started = func(httpAddr, grpcAddr string) {
		scheme := "http"
		if o.TLS != nil {
			scheme = "https"
		}
		if httpAddr != "" {
			fmt.Fprintf(c.App.ErrWriter, "serving on %s://%s (POST /v1/classify)\n", scheme, httpAddr)
		}
		if grpcAddr != "" {
			fmt.Fprintf(c.App.ErrWriter, "serving gRPC loraft.serve.v1.Classifier on %s\n", grpcAddr)
		}
		fmt.Fprintln(c.App.ErrWriter, disclaimer)
	}
	return serve.Serve(c.Context, svc, o)
}

// serveCredentials builds the fronts' TLS config and accepted tokens. Off
// loopback, serving needs TLS and a credential (tokens or client
// certificates) unless --insecure says otherwise.
func serveCredentials(c *cli.Context, addrs ...string) (*tls.Config, *bearer.Set, error) {
	cert, key, ca, tokens := c.Path("http-tls-cert"), c.Path("http-tls-key"), c.Path("http-client-ca"), c.Path("tokens-file")
	var cfg *tls.Config
	if (cert == "") != (key == "") {
		return nil, nil, errors.New("flags --http-tls-cert and --http-tls-key go together")
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, nil, fmt.Errorf("flags --http-tls-cert/--http-tls-key: %w", err)
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
		if ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, nil, fmt.Errorf("flag --http-client-ca: %w", err)
			}
			cfg.ClientCAs = x509.NewCertPool()
			if !cfg.ClientCAs.AppendCertsFromPEM(pem) {
				return nil, nil, fmt.Errorf("flag --http-client-ca: no certificate in %s", ca)
			}
			cfg.ClientAuth = tls.VerifyClientCertIfGiven
		}
	} else if ca != "" {
		return nil, nil, errors.New("flag --http-client-ca needs --http-tls-cert and --http-tls-key")
	}
	var accepted *bearer.Set
	if tokens != "" {
		var err error
		if accepted, err = bearer.Load(tokens); err != nil {
			return nil, nil, fmt.Errorf("flag --tokens-file: %w", err)
		}
	}
	var open []addrFlag
	for i, a := range addrs {
		open = append(open, addrFlag{[]string{"listen", "grpc-listen"}[i], a})
	}
	// Off loopback: TLS plus tokens or client certificates, or --insecure.
	secured := cfg != nil && (accepted.Len() > 0 || cfg.ClientCAs != nil)
	if err := secureByDefault(c, secured, open); err != nil {
		return nil, nil, fmt.Errorf("%w (for loraft serve: --http-tls-cert/--http-tls-key with --tokens-file or --http-client-ca)", err)
	}
	return cfg, accepted, nil
}
