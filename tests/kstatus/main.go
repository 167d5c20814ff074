// kstatus reads Kubernetes objects as JSON on stdin (one object, or a List such as
// `kubectl get hp -o json` prints) and prints, for each, the status Flux and cli-utils compute with
// the upstream kstatus module (sigs.k8s.io/cli-utils/pkg/kstatus/status): a JSON array of
// {"name", "status", "message"}. nsguard's tests run it over live HardeningProfiles.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(data); err != nil {
		return fmt.Errorf("parsing the input: %w", err)
	}
	items := []unstructured.Unstructured{obj}
	if obj.IsList() {
		list, err := obj.ToList()
		if err != nil {
			return err
		}
		items = list.Items
	}
	verdicts := make([]verdict, 0, len(items))
	for i := range items {
		res, err := status.Compute(&items[i])
		if err != nil {
			return fmt.Errorf("%s: %w", items[i].GetName(), err)
		}
		verdicts = append(verdicts, verdict{Name: items[i].GetName(), Status: res.Status.String(), Message: res.Message})
	}
	return json.NewEncoder(out).Encode(verdicts)
}
