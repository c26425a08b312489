// Command goclient reads a model's metadata from a Pronto server, then scores the same
// instances twice: with the Open Inference Protocol (ModelInfer, one tensor per model
// input, typed from the metadata) and with the named-feature Predict API. It prints one
// JSON document with both answers.
//
//	go run . -address localhost:50051 -model flight-delay < instances.json
//
// instances.json is a JSON list of objects, feature name to value.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"pronto.example/goclient/gen/inference"
	prontov1 "pronto.example/goclient/gen/pronto/v1"
)

// Output is what the program prints.
type Output struct {
	Model    string              `json:"model"`
	Versions []string            `json:"versions"`
	Inputs   []map[string]any    `json:"inputs"`
	Infer    map[string]any      `json:"infer"`
	Predict  []PredictionSummary `json:"predict"`
}

// PredictionSummary is one Predict answer.
type PredictionSummary struct {
	Label         string             `json:"label"`
	Probabilities map[string]float64 `json:"probabilities"`
}

func main() {
	address := flag.String("address", "localhost:50051", "server or Envoy host:port")
	model := flag.String("model", "flight-delay", "model name")
	apiKey := flag.String("api-key", "", "API key, sent as x-api-key")
	jwt := flag.String("jwt", "", "JWT, sent as authorization: Bearer")
	caFile := flag.String("ca-file", "", "use TLS verified against this CA file")
	useTLS := flag.Bool("tls", false, "use TLS verified against the system roots")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of each call")
	flag.Parse()

	if err := run(*address, *model, *apiKey, *jwt, *caFile, *useTLS, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}

func transport(caFile string, useTLS bool) (grpc.DialOption, error) {
	if caFile == "" && !useTLS {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", caFile)
		}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(config)), nil
}

func run(address, model, apiKey, jwt, caFile string, useTLS bool, timeout time.Duration) error {
	var instances []map[string]any
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &instances); err != nil {
		return fmt.Errorf("instances: %w", err)
	}
	if len(instances) == 0 {
		return fmt.Errorf("no instances on stdin")
	}

	creds, err := transport(caFile, useTLS)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(address, creds) // one connection, reused by every call
	if err != nil {
		return err
	}
	defer conn.Close()

	ctx := context.Background()
	if apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-api-key", apiKey)
	}
	if jwt != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+jwt)
	}
	oip := inference.NewGRPCInferenceServiceClient(conn)
	pv1 := prontov1.NewPredictionServiceClient(conn)

	call, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	meta, err := oip.ModelMetadata(call, &inference.ModelMetadataRequest{Name: model})
	if err != nil {
		return fmt.Errorf("ModelMetadata: %w", err)
	}
	out := Output{Model: meta.GetName(), Versions: meta.GetVersions()}
	for _, in := range meta.GetInputs() {
		out.Inputs = append(out.Inputs, map[string]any{
			"name": in.GetName(), "datatype": in.GetDatatype(), "shape": in.GetShape(),
		})
	}

	request, err := inferRequest(meta, instances)
	if err != nil {
		return err
	}
	call, cancel = context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := oip.ModelInfer(call, request)
	if err != nil {
		return fmt.Errorf("ModelInfer: %w", err)
	}
	out.Infer = map[string]any{"model_version": reply.GetModelVersion(), "id": reply.GetId()}
	for _, t := range reply.GetOutputs() {
		out.Infer[t.GetName()] = values(t)
	}

	predict := &prontov1.PredictRequest{Name: model}
	for _, inst := range instances {
		row, err := structpb.NewStruct(inst)
		if err != nil {
			return err
		}
		predict.Instances = append(predict.Instances, row)
	}
	call, cancel = context.WithTimeout(ctx, timeout)
	defer cancel()
	answer, err := pv1.Predict(call, predict)
	if err != nil {
		return fmt.Errorf("Predict: %w", err)
	}
	for _, p := range answer.GetPredictions() {
		out.Predict = append(out.Predict, PredictionSummary{p.GetLabel(), p.GetProbabilities()})
	}

	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	return encoder.Encode(out)
}

// inferRequest builds one [rows, 1] tensor per model input, in typed contents, converting
// each instance's value to the datatype the metadata declares.
func inferRequest(
	meta *inference.ModelMetadataResponse, instances []map[string]any,
) (*inference.ModelInferRequest, error) {
	request := &inference.ModelInferRequest{ModelName: meta.GetName(), Id: "go-example"}
	rows := int64(len(instances))
	for _, in := range meta.GetInputs() {
		contents := &inference.InferTensorContents{}
		for i, inst := range instances {
			value, ok := inst[in.GetName()]
			if !ok {
				return nil, fmt.Errorf("instance %d lacks %q", i, in.GetName())
			}
			switch in.GetDatatype() {
			case "BYTES":
				contents.BytesContents = append(contents.BytesContents, []byte(fmt.Sprint(value)))
			case "FP32":
				contents.Fp32Contents = append(contents.Fp32Contents, float32(number(value)))
			case "FP64":
				contents.Fp64Contents = append(contents.Fp64Contents, number(value))
			case "INT64":
				contents.Int64Contents = append(contents.Int64Contents, int64(number(value)))
			case "INT32":
				contents.IntContents = append(contents.IntContents, int32(number(value)))
			default:
				return nil, fmt.Errorf("input %q: datatype %s not handled by this example",
					in.GetName(), in.GetDatatype())
			}
		}
		request.Inputs = append(request.Inputs, &inference.ModelInferRequest_InferInputTensor{
			Name: in.GetName(), Datatype: in.GetDatatype(), Shape: []int64{rows, 1},
			Contents: contents,
		})
	}
	return request, nil
}

func number(value any) float64 {
	if f, ok := value.(float64); ok { // encoding/json decodes every number as float64
		return f
	}
	return 0
}

// values returns an output tensor's typed contents as a flat JSON-friendly slice.
func values(t *inference.ModelInferResponse_InferOutputTensor) any {
	c := t.GetContents()
	switch t.GetDatatype() {
	case "BYTES":
		out := make([]string, len(c.GetBytesContents()))
		for i, b := range c.GetBytesContents() {
			out[i] = string(b)
		}
		return out
	case "FP32":
		return c.GetFp32Contents()
	case "FP64":
		return c.GetFp64Contents()
	case "INT64":
		return c.GetInt64Contents()
	case "INT32":
		return c.GetIntContents()
	case "BOOL":
		return c.GetBoolContents()
	}
	return nil
}
