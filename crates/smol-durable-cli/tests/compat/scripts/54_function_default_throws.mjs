export const meta = { name: "function-default-throws", description: "A default-exported function that throws after an agent call" };

export default async function main(input) {
  const a = await agent("inside main " + input.topic);
  if (a.length > 0) {
    throw new TypeError("main failed after " + a);
  }
  return a;
}
