export const meta = { name: "throw-error", description: "A thrown Error fails the run with its message and location" };

phase("Before the throw");
const a = await agent("before the throw");
function inner() {
  throw new Error("something went wrong: " + a);
}
inner();
export default "unreachable";
