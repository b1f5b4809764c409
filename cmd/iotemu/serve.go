package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/dpsagent/dpsagent/emulator"
)

func serveCommand(stdout, stderr io.Writer) *cobra.Command {
	var dataDir, configFile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve DPS, the IoT Hub(s) and the admin API",
		Long: `Serve an emulated Azure Device Provisioning Service, its certificate issuance,
one or more IoT Hubs, and the admin API (JSON over HTTP on localhost).

Without --config: ID scope 0ne00000001, DPS on localhost:8883, hub "hub1" on
127.0.0.2:8883 (assigned as host 127.0.0.2), admin API on 127.0.0.1:8080, and no
enrollments (create them through POST /api/enrollments).

Devices trust DATA/tls-ca.pem for the servers; issued certificates chain to
DATA/device-root.pem. The devices DPS assigned, their credentials and twins are
kept in DATA/devices/ (a file each), so they reconnect after a restart without
registering again. Enrollments created, changed or deleted through the admin
API are kept in DATA/enrollments/; they win over the --config file's entry of
the same ID until that entry is edited. Once every listener is up,
DATA/endpoints.json holds the actual addresses and a line starting with "ready"
is printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return errors.New("--data is required: the directory that keeps the CAs, the device registry and the enrollments across restarts")
			}
			cfg, err := emulator.LoadConfig(configFile)
			if err != nil {
				return err
			}
			emu, err := emulator.New(cfg, dataDir, emulator.Options{Logger: newLogger(stderr)})
			if err != nil {
				return err
			}
			ep, err := emu.Start()
			if err != nil {
				return err
			}
			defer emu.Close()
			summary, _ := json.Marshal(ep)
			fmt.Fprintf(stdout, "ready %s\n", summary)
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "", "directory for the CAs, the device registry, the admin API's enrollments, endpoints.json and other state")
	cmd.Flags().StringVar(&configFile, "config", "", "YAML configuration (default: the built-in defaults)")
	return cmd
}
