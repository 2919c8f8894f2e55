export const meta = { name: "child-middle", description: "Child workflow that calls another child" };

const leaf = await workflow({ scriptPath: "./child_echo.mjs" }, { depth: 2 });
export default { leaf };
