package hub_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"sync"
	"time"

	"github.com/dpsagent/dpsagent/mqtt/hub"
)

// The agent keeps its current identity behind a lock and hands it out
// through the callback; after a renewal it swaps it and calls Reconnect.
func Example() {
	var (
		mu      sync.Mutex
		current *tls.Certificate // the stored chain and TPM key
	)
	c, err := hub.New(hub.Options{
		Host:     "myhub.azure-devices.net", // assignedHub from DPS
		DeviceID: "gateway-001",
		Auth: hub.Auth{Certificate: func() (*tls.Certificate, error) {
			mu.Lock()
			defer mu.Unlock()
			return current, nil
		}},
		TrustBundleFile: "", // Azure's roots are built in
		OnDesired: func(patch map[string]any, version int) {
			log.Printf("desired v%d: %v", version, patch)
		},
		OnConnectionChange: func(connected bool, err error) {
			if errors.Is(err, hub.ErrUnauthorized) {
				log.Print("identity refused: provision again through DPS")
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err) // errors.Is(err, hub.ErrUnauthorized): back to DPS
	}
	if _, err := c.UpdateReported(ctx, map[string]any{"certificate": map[string]any{"validUntil": "2026-06-01T00:00:00Z"}}); err != nil {
		log.Print(err)
	}

	// Renewal through the credential API: CSR for a new key, the issued
	// chain verified and stored by the caller, then a reconnect with it.
	var csrDER []byte // keys.NewCSR(newKey, "gateway-001")
	chain, err := c.IssueCertificate(ctx, csrDER)
	var he *hub.Error
	switch {
	case errors.As(err, &he) && he.Retryable():
		log.Printf("later: %v", he.Hint())
	case err != nil:
		log.Printf("fall back to DPS: %v", err)
	default:
		mu.Lock()
		current = &tls.Certificate{Certificate: chain /* , PrivateKey: newKey */}
		mu.Unlock()
		if err := c.Reconnect(ctx); err != nil {
			log.Printf("the new certificate does not work; keep the old one: %v", err)
		}
	}
}
