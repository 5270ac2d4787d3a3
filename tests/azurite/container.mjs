// Creates a blob container in Azurite with Microsoft's own SDK
// (@azure/storage-blob), as an operator provisions one in Azure:
//   node container.mjs http://127.0.0.1:PORT/devstoreaccount1 NAME
// Prints "created NAME" (or "exists NAME") and exits.
import { BlobServiceClient } from "@azure/storage-blob";

const [endpoint, name] = process.argv.slice(2);
// Azurite's well-known development account (public; never a real key).
const connection =
  "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
  "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
  `BlobEndpoint=${endpoint};`;
const container = BlobServiceClient.fromConnectionString(connection).getContainerClient(name);
const { succeeded } = await container.createIfNotExists();
console.log(`${succeeded ? "created" : "exists"} ${name}`);
