package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent/store"
)

// The local API: JSON over HTTP on a unix socket in the runtime directory, for
// the CLI beside a running daemon (status with live facts, renew now). Mode
// 0660: the service user and its group; root always.
const socketName = "dpsagent.sock"

func socketPath(cfg *Config) string { return filepath.Join(runtimeDir(cfg), socketName) }

// serveLocalAPI listens until ctx ends. A stale socket from a crashed run is
// replaced (the state directory's lock already proved no daemon runs).
func serveLocalAPI(ctx context.Context, cfg *Config, d *daemon, log *zap.Logger) (func(), error) {
	path := socketPath(cfg)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("local API: remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("local API: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("local API: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		m, err := d.store.Load()
		if err != nil && m == nil {
			m = &store.Manifest{}
		}
		view := liveStatus(offlineStatus(cfg, m, time.Now()), d.agent.Status())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(view)
	})
	mux.HandleFunc("POST /v1/renew", func(w http.ResponseWriter, _ *http.Request) {
		d.agent.Renew()
		w.WriteHeader(http.StatusAccepted)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("local API stopped", zap.Error(err))
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
		_ = os.Remove(path)
	}, nil
}

// errNoDaemon says the local API did not answer: the daemon is not running
// (or runs with another runtime directory).
var errNoDaemon = errors.New("the dpsagent daemon is not running")

func localClient(path string) *http.Client {
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}
}

func daemonStatus(cfg *Config) (statusView, error) {
	var v statusView
	resp, err := localClient(socketPath(cfg)).Get("http://dpsagent/v1/status")
	if err != nil {
		return v, fmt.Errorf("%w (%v)", errNoDaemon, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("local API: %s", resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&v)
	return v, err
}

func daemonRenew(cfg *Config) error {
	resp, err := localClient(socketPath(cfg)).Post("http://dpsagent/v1/renew", "application/json", nil)
	if err != nil {
		return fmt.Errorf("%w (%v)", errNoDaemon, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("local API: %s", resp.Status)
	}
	return nil
}
