// A parallel fan-out of five calls, then one call combining them.
export const meta = { name: "fanout", description: "parallel fan-out and a combining call" };

const parts = await parallel(
  [0, 1, 2, 3, 4].map((i) => () => agent(`fan-out part ${i} of ${args.topic}`)),
);
const combined = await agent(`combine ${parts.map((part) => part.length).join(",")}`);
export default { parts, combined };
