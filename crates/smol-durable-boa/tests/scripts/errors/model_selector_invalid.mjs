// expect: unknown model selector query parameter `foo`
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
export default await agent("who", { model: "gpt-x?foo=1" });
