// A fast OPC UA server for bench/opcua.py (node-opcua): N Double variables in namespace
// urn:wellos:bench:opcua, ids s=v0..v<N-1>, all updated every second (spread over 10 slices),
// SourceTimestamp = time of the update. Prints {"ready": true} on stdout once listening.
const { OPCUAServer } = require("node-opcua-server");
const { Variant, DataType } = require("node-opcua-variant");
const { StatusCodes } = require("node-opcua-status-code");

async function main() {
  const items = parseInt(process.argv[2], 10);
  const port = parseInt(process.argv[3], 10);
  const server = new OPCUAServer({
    port, resourcePath: "/bench", allowAnonymous: true,
    serverCapabilities: { maxSessions: 10, operationLimits: { maxNodesPerRead: 10000,
      maxMonitoredItemsPerCall: 10000, maxNodesPerRegisterNodes: 10000 } },
    buildInfo: { productName: "ingestd-bench" },
  });
  await server.initialize();
  const ns = server.engine.addressSpace.registerNamespace("urn:wellos:bench:opcua");
  const folder = ns.addFolder(server.engine.addressSpace.rootFolder.objects, { browseName: "Bench" });
  const vars = [];
  for (let i = 0; i < items; i++) {
    vars.push(ns.addVariable({ componentOf: folder, browseName: `v${i}`, nodeId: `s=v${i}`, dataType: "Double",
      value: new Variant({ dataType: DataType.Double, value: 0 }) }));
  }
  await server.start();
  process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  const slices = 10, per = Math.ceil(items / slices);
  let tick = 0;
  const start = Date.now();
  const step = () => {
    const s = tick % slices;
    const now = new Date();
    for (let i = s * per; i < Math.min(items, (s + 1) * per); i++) {
      vars[i].setValueFromSource(new Variant({ dataType: DataType.Double, value: tick }), StatusCodes.Good, now);
    }
    tick++;
    setTimeout(step, Math.max(0, start + tick * (1000 / slices) - Date.now()));
  };
  step();
}
main().catch((e) => { console.error(e); process.exit(1); });
