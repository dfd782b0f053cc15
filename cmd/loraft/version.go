package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"text/tabwriter"

	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/urfave/cli/v2"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the loraft, gotch and libtorch versions, CUDA and thread count",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "stubbed", Usage: "also list the libtorch ops the shim had to stub"},
		},
		Action: func(c *cli.Context) error {
			if _, err := libtorch.SetThreads(); err != nil {
				return err
			}
			info := libtorch.Describe()
			if c.Bool("json") {
				out := struct {
					Loraft string `json:"loraft"`
					Go     string `json:"go"`
					libtorch.Info
				}{version, runtime.Version(), info}
				if !c.Bool("stubbed") {
					out.Info.StubbedOps = nil
				}
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			cuda := "no"
			if info.CUDA {
				cuda = fmt.Sprintf("yes (%d devices)", info.CUDADevices)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "loraft\t%s\n", version)
			fmt.Fprintf(tw, "go\t%s\n", runtime.Version())
			fmt.Fprintf(tw, "gotch\t%s\n", info.GotchVersion)
			fmt.Fprintf(tw, "libtorch\t%s\n", info.TorchVersion)
			fmt.Fprintf(tw, "shim\t%s (C++11 ABI %t)\n", info.Shim, info.CXX11ABI)
			fmt.Fprintf(tw, "cuda\t%s\n", cuda)
			fmt.Fprintf(tw, "threads\t%d\n", info.Threads)
			fmt.Fprintf(tw, "stubbed ops\t%d (ops the installed libtorch lacks; --stubbed lists them)\n", len(info.StubbedOps))
			if err := tw.Flush(); err != nil {
				return err
			}
			if c.Bool("stubbed") {
				fmt.Fprintln(c.App.Writer, strings.Join(info.StubbedOps, "\n"))
			}
			return nil
		},
	}
}
