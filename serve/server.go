package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ServerOptions say where and how the fronts listen.
type ServerOptions struct {
	// HTTPAddr is the HTTP JSON front's address ("" for none).
	HTTPAddr string
	// GRPCAddr is the gRPC front's address ("" for none).
	GRPCAddr string
	// TLS, when set, serves both fronts over TLS (with client certificates
	// verified when its ClientCAs are set).
	TLS *tls.Config
	// HTTP are the limits and credentials both fronts apply.
	HTTP HTTPOptions
	// Started, when set, is told the addresses actually listened on (a :0
	// port resolved) before serving starts.
	Started func(httpAddr, grpcAddr string)
}

// Serve runs the fronts until ctx ends, then stops accepting, lets requests
// in flight finish (up to 5 s) and returns.
func Serve(ctx context.Context, s *Service, o ServerOptions) error {
	if o.HTTPAddr == "" && o.GRPCAddr == "" {
		return errors.New("nothing to serve: no HTTP or gRPC address")
	}
	var hl, gl net.Listener
	var err error
	if o.HTTPAddr != "" {
		if hl, err = net.Listen("tcp", o.HTTPAddr); err != nil {
			return fmt.Errorf("HTTP listener: %w", err)
		}
		defer hl.Close()
	}
	if o.GRPCAddr != "" {
		if gl, err = net.Listen("tcp", o.GRPCAddr); err != nil {
			return fmt.Errorf("gRPC listener: %w", err)
		}
		defer gl.Close()
	}
	if o.Started != nil {
		o.Started(addrOf(hl), addrOf(gl))
	}
	errc := make(chan error, 2)
	var hs *http.Server
	if hl != nil {
		hs = &http.Server{Handler: Handler(s, o.HTTP), TLSConfig: o.TLS,
			// A slow or stalled client holds a connection, not the service.
			ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: o.HTTP.Timeout + 10*time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
		go func() {
			var err error
			if o.TLS != nil {
				err = hs.ServeTLS(hl, "", "")
			} else {
				err = hs.Serve(hl)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("HTTP front: %w", err)
			}
		}()
	}
	var gs *grpc.Server
	if gl != nil {
		opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(int(o.HTTP.MaxBodyBytes)), grpc.ConnectionTimeout(5 * time.Second)}
		if o.TLS != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(o.TLS)))
		}
		gs = grpc.NewServer(opts...)
		NewGRPCServer(s, o.HTTP).Register(gs)
		go func() {
			if err := gs.Serve(gl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				errc <- fmt.Errorf("gRPC front: %w", err)
			}
		}()
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if hs != nil {
		hs.Shutdown(sctx)
	}
	if gs != nil {
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-sctx.Done():
			gs.Stop()
		}
	}
	return err
}

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}
