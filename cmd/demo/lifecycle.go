package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

const registrationID = "demo-gateway-001"

// lifecycle is the story the demo tells: a fresh gateway gets a TPM key, a
// certificate from DPS, a hub connection, and a renewal with a new key.
func (d *demo) lifecycle(ctx context.Context) error {
	d.say("Starting iotemu: a local stand-in for Azure DPS, its certificate issuance and IoT Hub")
	key := base64.StdEncoding.EncodeToString([]byte("demo-onboarding-key-0123456789ab"))
	emuConfig := fmt.Sprintf(`dps: {listen: "127.0.0.1:0"}
hubs: [{name: hub1, host: 127.0.0.1, listen: "127.0.0.1:0"}]
admin: {listen: "127.0.0.1:0"}
certificates: {lifetime: %s, credential_api_delay: 1s}
enrollments:
  - registration_id: %s
    attestation: {type: symmetric_key, primary_key: %q}
`, d.lifetime, registrationID, key)
	ep, err := d.startEmulator(ctx, emuConfig)
	if err != nil {
		return err
	}
	d.detail("DPS at %s (ID scope %s), hub at %s, admin API at %s", ep.DPS, ep.IDScope, ep.Hubs["hub1"].Address, ep.Admin)
	d.detail("enrolled %s with a symmetric key; certificates live %s so you can watch one renew", registrationID, d.lifetime)

	d.say("Starting a simulated TPM (iotemu tpm), standing in for the gateway's TPM 2.0 chip")
	tpmSpec, err := d.startTPM(ctx)
	if err != nil {
		return err
	}
	d.detail("listening on %s", tpmSpec)

	d.say("Writing the gateway's configuration: ID scope, registration ID, onboarding key")
	cfgPath, err := d.writeAgentConfig(ep, tpmSpec, key)
	if err != nil {
		return err
	}
	d.detail("%s", cfgPath)

	d.say("Starting dpsagent: it creates a key in the TPM, sends DPS a CSR, checks the issued chain, and connects")
	if err := d.startAgent(ctx, cfgPath); err != nil {
		return err
	}
	first, err := d.waitDevice(ctx, ep, func(dev device) bool { return dev.Connected && dev.Certificate != nil }, 45*time.Second)
	if err != nil {
		return fmt.Errorf("waiting for the device to connect: %w", err)
	}
	d.detail("connected to the hub with certificate %s, valid until %s", first.Certificate.Serial, first.Certificate.NotAfter.Format(time.TimeOnly))

	d.say("Waiting for the renewal: at about 80%% of the certificate's life the agent makes a new TPM key and renews")
	renewed, err := d.waitDevice(ctx, ep, func(dev device) bool {
		return dev.Connected && dev.Certificate != nil && dev.Certificate.Serial != first.Certificate.Serial
	}, d.lifetime+30*time.Second)
	if err != nil {
		return fmt.Errorf("waiting for the renewal: %w", err)
	}
	d.detail("renewed: connected again with certificate %s, valid until %s", renewed.Certificate.Serial, renewed.Certificate.NotAfter.Format(time.TimeOnly))
	twin, err := d.reported(ep)
	if err == nil {
		d.detail("the device twin says: %s", twin)
	}

	d.say("Stopping everything")
	d.stopAll()
	fmt.Fprintf(d.out, "\nDone: provisioned, connected, and renewed with a new key, the private keys never leaving the TPM.\n")
	return nil
}

// device is what the emulator's admin API says of a device.
type device struct {
	Connected   bool `json:"connected"`
	Certificate *struct {
		Serial   string    `json:"serial"`
		NotAfter time.Time `json:"not_after"`
	} `json:"certificate"`
}

func (d *demo) waitDevice(ctx context.Context, ep *endpoints, cond func(device) bool, limit time.Duration) (device, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		var dev device
		if err := getJSON(ctx, ep.Admin+"/api/devices/"+registrationID, &dev); err == nil && cond(dev) {
			return dev, nil
		}
		if err := d.agentExited(); err != nil {
			return device{}, err
		}
		select {
		case <-ctx.Done():
			return device{}, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return device{}, errors.New("it did not happen in time; see the agent's lines above")
}

// reported returns the certificate facts the agent reported in the twin.
func (d *demo) reported(ep *endpoints) (string, error) {
	var twin struct {
		Reported struct {
			Certificate json.RawMessage `json:"certificate"`
		} `json:"reported"`
	}
	if err := getJSON(context.Background(), ep.Admin+"/api/devices/"+registrationID+"/twin", &twin); err != nil {
		return "", err
	}
	return string(twin.Reported.Certificate), nil
}

func (d *demo) writeAgentConfig(ep *endpoints, tpmSpec, key string) (string, error) {
	keyFile := filepath.Join(d.dir, "onboarding.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		return "", err
	}
	_, hubPort, err := splitPort(ep.Hubs["hub1"].Address)
	if err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`id_scope: %s
registration_id: %s
onboarding:
  method: symmetric_key
  symmetric_key_file: %s
advanced:
  dps_endpoint: %s
  trust_bundle_file: %s
  tpm: %s
  state_dir: %s
  hub_port: %s
`, ep.IDScope, registrationID, keyFile, ep.DPS, ep.TLSCAFile, tpmSpec, filepath.Join(d.dir, "state"), hubPort)
	path := filepath.Join(d.dir, "config.yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}
